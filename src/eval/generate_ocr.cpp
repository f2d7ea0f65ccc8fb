// Greedy generation for HunyuanOCR prompts; see include/angelslim/eval/generate_ocr.h.
#include "angelslim/eval/generate_ocr.h"

#include <algorithm>

#include "angelslim/core/error.h"
#include "angelslim/data/multimodal_dataset.h"
#include "angelslim/eval/generate.h"
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
  return greedy_continue(model.llm(), session, std::move(logits), *tok, max_new, out);
}

}  // namespace angelslim
