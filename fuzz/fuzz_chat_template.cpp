// Fuzzes the chat-template engine (Jinja subset: lexer, parser, evaluator, filters, methods): the input is a
// template source, rendered with a fixed conversation, with and without the generation prompt and extras.
#include <cstddef>
#include <cstdint>
#include <string>

#include "angelslim/text/chat_template.h"
#include "fuzz_util.h"

namespace {
using ojson = nlohmann::ordered_json;

const ojson& messages() {
  static const ojson m = ojson::parse(R"([
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi <b>there</b> 12"},
    {"role": "assistant", "content": "Hello!", "reasoning_content": "think"},
    {"role": "tool", "content": "{\"x\": [1, 2.5, null, true]}"},
    {"role": "user", "content": "Again?"}
  ])");
  return m;
}

const ojson& extra() {
  static const ojson e = ojson::parse(R"({
    "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": false,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
  })");
  return e;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return angelslim::fuzz::guarded([&] {
    angelslim::ChatTemplate t(std::string(reinterpret_cast<const char*>(data), size), "chat_template.jinja");
    (void)t.render(messages(), false);
    (void)t.render(messages(), true, extra());
  });
}
