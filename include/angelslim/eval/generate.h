// Greedy generation with a KV cache, streaming decoded text as tokens arrive.
#pragma once
#include <cstdint>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "angelslim/model/hunyuan.h"
#include "angelslim/text/tokenizer.h"

namespace angelslim {

// Prompt ids: the chat template's rendering of one user turn with the generation prompt (chat = true), or
// BOS + encode(prompt).
std::vector<int32_t> prompt_ids(const std::filesystem::path& model_dir, const Tokenizer& tok, const std::string& prompt,
                                bool chat);

// Greedy continuation of a prompt already in `session`, whose last logits are `logits` (stops at an EOS id or
// after max_new tokens); each new token's text goes to `out` as soon as it forms complete UTF-8.
std::vector<int32_t> greedy_continue(const HunyuanModel& model, HunyuanModel::Session& session,
                                     std::vector<float> logits, const Tokenizer& tok, int64_t max_new,
                                     std::ostream* out);

// Greedy continuation of `ids` (stops at an EOS id or after max_new tokens); each new token's text goes to
// `out` as soon as it forms complete UTF-8. Returns the generated ids.
std::vector<int32_t> greedy_decode(const HunyuanModel& model, const Tokenizer& tok, const std::vector<int32_t>& ids,
                                   int64_t max_new, std::ostream* out);

// The `generate` command: loads model and tokenizer, prints the continuation. Returns the exit status.
int generate_greedy(const std::filesystem::path& model_dir, const std::string& prompt, bool chat, int64_t max_new,
                    std::ostream& out);

}  // namespace angelslim
