// Fuzzes the hy.tiktoken loader (SPEC 1.6.2): base64 ranks, rank order, uniqueness, single-byte coverage.
// A tokenizer that loads must encode and decode a few fixed texts and decode every id.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "angelslim/text/tiktoken_tokenizer.h"
#include "fuzz_util.h"

namespace {
constexpr std::string_view kTexts[] = {
    "Hello world, 123 tokens!\n\n  end's",
    "\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c 2024 e\xcc\x81",
    "<|startoftext|>hi<|extra_0|>x<|endoftext|>",
    "",
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return angelslim::fuzz::guarded([&] {
    auto tok = angelslim::TiktokenTokenizer::from_text(std::string_view(reinterpret_cast<const char*>(data), size),
                                                       "hy.tiktoken");
    const int32_t n = tok->vocab_size();
    for (std::string_view text : kTexts) {
      const auto ids = tok->encode(text);
      for (int32_t id : ids)
        if (id < 0 || id >= n) __builtin_trap();
      (void)tok->decode(ids);
    }
    std::vector<int32_t> all;
    for (int32_t id = 0; id < n && id < 4096; ++id) all.push_back(id);
    (void)tok->decode(all);
  });
}
