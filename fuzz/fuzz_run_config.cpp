// Fuzzes the YAML run-configuration loader (SPEC 2.1-2.6): YAML syntax, schema, defaults and validation.
// Relative paths resolve against the working directory (run from the repository root, the example configs in
// the seed corpus reach the full validation).
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "angelslim/config/run_config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return angelslim::fuzz::guarded([&] {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const auto cfg = angelslim::parse_run_config(text, "configs/fuzz.yaml");
    (void)cfg.output_dir();
    (void)cfg.to_json().dump();
  });
}
