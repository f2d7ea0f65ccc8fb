// Greedy generation for HunyuanOCR prompts; see include/angelslim/eval/generate_ocr.h.
#include "angelslim/eval/generate_ocr.h"

#include <algorithm>

#include "angelslim/core/error.h"
#include "angelslim/data/multimodal_dataset.h"
#include "angelslim/model/hunyuan_vl.h"
#include "angelslim/text/chat_template.h"
#include "angelslim/text/tokenizer.h"

namespace angelslim {

std::vector<int32_t> generate_ocr(const std::filesystem::path& model_dir, const std::string& prompt,
                                  const std::filesystem::path& image, int64_t max_new, std::ostream* out) {
  const auto tok = Tokenizer::load(model_dir);
  const auto tmpl = ChatTemplate::load(model_dir);
  const HunyuanOcrModel model(model_dir);
  const auto s = make_ocr_prompt(prompt, image, *tok, tmpl, model.config(), model.processor());
  OcrSequence seq;
  seq.ids = s.ids;
  seq.xd_pos = s.xd_pos;
  seq.image_begin = s.image_begin;
  std::vector<std::vector<float>> emb;
  for (const auto& im : s.images) emb.push_back(model.encode(im));
  const int64_t n = static_cast<int64_t>(seq.ids.size());
  HunyuanModel::Session session;
  auto logits = model.llm().step_embeds(session, model.embed(seq, emb), n, seq.xd_pos.data());
  const auto eos = tok->eos_ids();
  std::vector<int32_t> gen;
  std::size_t printed = 0;
  for (int64_t i = 0; i < max_new; ++i) {
    const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    gen.push_back(next);
    if (out) {
      // Print whole UTF-8 sequences only (a token may end inside one).
      const std::string text = tok->decode(gen);
      std::size_t upto = text.size();
      while (upto > printed && (static_cast<unsigned char>(text[upto - 1]) & 0xC0) == 0x80) --upto;
      if (upto > printed && static_cast<unsigned char>(text[upto - 1]) >= 0xC0) --upto;
      if (upto > printed) {
        *out << text.substr(printed, upto - printed) << std::flush;
        printed = upto;
      }
    }
    logits = model.llm().step(session, &next, 1);
  }
  if (out) {
    const std::string text = tok->decode(gen);
    if (text.size() > printed) *out << text.substr(printed);
    *out << std::endl;
  }
  return gen;
}

}  // namespace angelslim
