// Fuzzes the jsonl calibration reader (SPEC 1.7.1, 1.7.2): line splitting, JSON records, record shapes, role
// rules, chat-template rendering and tokenization with the hy-dense-tiny fixture's tokenizer and template.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "angelslim/data/text_dataset.h"
#include "fuzz_util.h"

namespace {
const angelslim::Tokenizer* g_tokenizer = nullptr;
const angelslim::ChatTemplate* g_template = nullptr;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const auto dir = angelslim::fuzz::data_dir() / "fixtures" / "hy-dense-tiny";
  g_tokenizer = angelslim::Tokenizer::load(dir).release();
  g_template = new angelslim::ChatTemplate(angelslim::ChatTemplate::load(dir));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return angelslim::fuzz::guarded([&] {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    angelslim::DatasetStats stats;
    // The last byte picks shuffling and the sample limit, so both paths are covered.
    const uint8_t knob = size ? data[size - 1] : 0;
    const auto samples = angelslim::parse_text_dataset(text, "fuzz.jsonl", *g_tokenizer, *g_template, 64,
                                                       (knob & 2) ? 4 : 0, knob & 1, 42, &stats);
    for (const auto& s : samples) {
      if (s.ids.size() < 2 || s.ids.size() > 64) __builtin_trap();
      for (int32_t id : s.ids)
        if (id < 0 || id >= g_tokenizer->vocab_size()) __builtin_trap();
    }
    (void)stats.to_json().dump();
  });
}
