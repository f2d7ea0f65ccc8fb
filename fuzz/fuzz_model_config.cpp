// Fuzzes config.json parsing (SPEC 1.3, 1.4): model family, dimensions, RoPE, MoE per-layer lists.
#include <cstddef>
#include <cstdint>

#include "angelslim/model/model_config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // load_model_config turns a JSON syntax error into FormatError; the fuzzer goes on to the field checks.
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  return angelslim::fuzz::guarded([&] {
    const auto cfg = angelslim::parse_model_config(j, "config.json");
    (void)cfg.rope_base();
    if (cfg.family == angelslim::ModelFamily::kMoE)
      for (int64_t l = 0; l < cfg.n_layers; ++l) (void)cfg.shared_d_ff(l);
  });
}
