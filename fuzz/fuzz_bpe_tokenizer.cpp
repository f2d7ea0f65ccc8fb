// Fuzzes the tokenizer.json loader (SPEC 1.6.1): added tokens, normalizer, pre-tokenizers, vocab and merges.
// A tokenizer that loads must encode and decode a few fixed texts and decode every id.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "angelslim/text/bpe_tokenizer.h"
#include "fuzz_util.h"

namespace {
constexpr std::string_view kTexts[] = {
    "Hello world, 123 tokens!\n\n  end",
    "\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c 2024 \xe3\x81\x82",
    "<\xef\xbd\x9chy_begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>hi<\xef\xbd\x9chy_User\xef\xbd\x9c>x",
    "",
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return angelslim::fuzz::guarded([&] {
    auto tok = angelslim::BpeTokenizer::from_json(std::string_view(reinterpret_cast<const char*>(data), size),
                                                  "tokenizer.json");
    const int32_t n = tok->vocab_size();
    for (std::string_view text : kTexts) {
      (void)tok->pre_tokenize(text);
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
