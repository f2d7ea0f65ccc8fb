// Greedy generation; see include/angelslim/eval/generate.h.
#include "angelslim/eval/generate.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "angelslim/core/error.h"
#include "angelslim/text/chat_template.h"

namespace angelslim {

namespace {
// Length of the longest prefix of s that does not end inside a UTF-8 sequence.
std::size_t complete_utf8_prefix(const std::string& s) {
  std::size_t n = s.size();
  std::size_t i = n;
  int back = 0;
  while (i > 0 && back < 4) {
    const auto c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80) {  // lead byte (or ASCII)
      const std::size_t need = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
      return (n - (i - 1) >= need) ? n : i - 1;
    }
    --i;
    ++back;
  }
  return n;
}
}  // namespace

std::vector<int32_t> prompt_ids(const std::filesystem::path& model_dir, const Tokenizer& tok, const std::string& prompt,
                                bool chat) {
  if (chat) {
    const auto tmpl = ChatTemplate::load(model_dir);
    const nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", prompt}}});
    return tok.encode(tmpl.render(messages, true));
  }
  std::vector<int32_t> ids{tok.bos_id()};
  const auto body = tok.encode(prompt);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::vector<int32_t> greedy_continue(const HunyuanModel& model, HunyuanModel::Session& session,
                                     std::vector<float> logits, const Tokenizer& tok, int64_t max_new,
                                     std::ostream* out) {
  const auto eos = tok.eos_ids();
  std::vector<int32_t> gen;
  std::size_t printed = 0;
  for (int64_t i = 0; i < max_new; ++i) {
    const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    gen.push_back(next);
    if (out) {
      const std::string text = tok.decode(gen);
      const std::size_t upto = complete_utf8_prefix(text);
      if (upto > printed) {
        *out << text.substr(printed, upto - printed) << std::flush;
        printed = upto;
      }
    }
    logits = model.step(session, &next, 1);
  }
  if (out) {
    const std::string text = tok.decode(gen);
    if (text.size() > printed) *out << text.substr(printed);
    *out << std::endl;
  }
  return gen;
}

std::vector<int32_t> greedy_decode(const HunyuanModel& model, const Tokenizer& tok, const std::vector<int32_t>& ids,
                                   int64_t max_new, std::ostream* out) {
  if (ids.empty()) throw InvalidInput("generate: the prompt encodes to no tokens");
  HunyuanModel::Session session;
  auto logits = model.step(session, ids.data(), static_cast<int64_t>(ids.size()));
  return greedy_continue(model, session, std::move(logits), tok, max_new, out);
}

int generate_greedy(const std::filesystem::path& model_dir, const std::string& prompt, bool chat, int64_t max_new,
                    std::ostream& out) {
  const auto tok = Tokenizer::load(model_dir);
  const auto ids = prompt_ids(model_dir, *tok, prompt, chat);
  const HunyuanModel model(model_dir);
  greedy_decode(model, *tok, ids, max_new, &out);
  return 0;
}

}  // namespace angelslim
