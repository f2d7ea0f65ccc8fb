// HunyuanOCR LLM side: image token layout, XD-RoPE positions and op, the whole-model wrapper (SPEC 3.8.4).
#include "angelslim/model/hunyuan_vl.h"

#include <cmath>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"
#include "angelslim/model/vision.h"
#include "angelslim/ops/cpu_ops.h"

namespace angelslim {

void xdrope(float* x, int64_t n, int64_t n_heads, int64_t D, const float* inv_freq, const int32_t* pos,
            std::span<const int64_t> sections, bool rb) {
  const int64_t half = D / 2;
  ANGELSLIM_ASSERT(sections.size() == 4);
  std::vector<int> axis(static_cast<std::size_t>(half));
  {
    int64_t j = 0;
    for (int a = 0; a < 4; ++a)
      for (int64_t i = 0; i < sections[static_cast<std::size_t>(a)]; ++i) axis[static_cast<std::size_t>(j++)] = a;
    ANGELSLIM_ASSERT(j == half);
  }
  std::vector<float> phi(static_cast<std::size_t>(half)), c(phi.size()), s(phi.size());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < half; ++j)
      phi[j] = static_cast<float>(pos[t * 4 + axis[static_cast<std::size_t>(j)]]) * inv_freq[j];
    cpu::rope_token(x + t * n_heads * D, n_heads, D, phi.data(), c.data(), s.data(), rb);
  }
}

std::vector<int32_t> ocr_positions(const ModelConfig& cfg, std::span<const int32_t> ids,
                                   const std::vector<std::array<int64_t, 2>>& grids, int64_t m) {
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<int32_t> pos(static_cast<std::size_t>(n * 4));
  for (int64_t t = 0; t < n; ++t)
    for (int a = 0; a < 4; ++a) pos[static_cast<std::size_t>(t * 4 + a)] = static_cast<int32_t>(t);
  std::size_t k = 0;
  for (int64_t t = 0; t < n;) {
    if (ids[static_cast<std::size_t>(t)] != cfg.image_token_id) {
      ++t;
      continue;
    }
    ANGELSLIM_CHECK(k < grids.size(), InvalidInput, "the prompt has more images ({}+) than image inputs ({})", k + 1,
                    grids.size());
    const int64_t gh = grids[k][0] / m, gw = grids[k][1] / m;
    const int64_t count = gh * (gw + 1) + 2;
    ANGELSLIM_CHECK(t + count <= n, InvalidInput, "image {}: its {} tokens run past the end of the sequence ({})", k,
                    count, n);
    const int64_t s = t + 1;  // slot 0 is the image_begin vector
    for (int64_t r = 0; r < gh; ++r)
      for (int64_t c = 0; c <= gw; ++c) {
        const int64_t i = s + r * (gw + 1) + c;
        pos[static_cast<std::size_t>(i * 4 + 1)] = static_cast<int32_t>(c);
        pos[static_cast<std::size_t>(i * 4 + 2)] = static_cast<int32_t>(r);
        pos[static_cast<std::size_t>(i * 4 + 3)] = static_cast<int32_t>(k);
      }
    t += count;
    ++k;
  }
  ANGELSLIM_CHECK(k == grids.size(), InvalidInput, "the prompt has {} image(s) but {} image input(s) were given", k,
                  grids.size());
  return pos;
}

OcrSequence layout_ocr_sequence(const ModelConfig& cfg, std::span<const int32_t> ids,
                                const std::vector<std::array<int64_t, 2>>& grids, int64_t m) {
  OcrSequence out;
  out.grids = grids;
  std::size_t k = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] != cfg.image_token_id) {
      out.ids.push_back(ids[i]);
      continue;
    }
    ANGELSLIM_CHECK(k < grids.size(), InvalidInput, "the prompt has more image placeholders than images ({})",
                    grids.size());
    ANGELSLIM_CHECK(i + 1 >= ids.size() || ids[i + 1] != cfg.image_token_id, InvalidInput,
                    "the prompt holds adjacent image tokens at {}: expected one placeholder per image", i);
    out.image_begin.push_back(static_cast<int64_t>(out.ids.size()));
    const int64_t count = n_image_tokens(grids[k][0], grids[k][1], m);
    out.ids.insert(out.ids.end(), static_cast<std::size_t>(count), static_cast<int32_t>(cfg.image_token_id));
    ++k;
  }
  ANGELSLIM_CHECK(k == grids.size(), InvalidInput, "the prompt has {} image placeholder(s) but {} image(s)", k,
                  grids.size());
  out.xd_pos = ocr_positions(cfg, out.ids, grids, m);
  return out;
}

HunyuanOcrModel::HunyuanOcrModel(const std::filesystem::path& dir, const ForwardOptions& opt)
    : llm_(dir, opt), round_bf16_(opt.round_bf16) {
  ANGELSLIM_CHECK(llm_.config().family == ModelFamily::kOcr, InvalidInput,
                  "{}: not a HunyuanOCR (hunyuan_vl) checkpoint", dir.string());
  vision_ = std::make_unique<VisionTower>(load_vision_tower(llm_.store(), llm_.config()));
  processor_ = load_image_processor_config(dir);
  ANGELSLIM_CHECK(processor_.patch_size == vision_->cfg.patch_size && processor_.merge_size == vision_->cfg.merge_size,
                  InvalidInput, "{}: the processor's patch/merge size ({}/{}) differ from vision_config ({}/{})",
                  dir.string(), processor_.patch_size, processor_.merge_size, vision_->cfg.patch_size,
                  vision_->cfg.merge_size);
}

HunyuanOcrModel::~HunyuanOcrModel() = default;

std::vector<float> HunyuanOcrModel::encode(const ImagePatches& img) const {
  VisionOptions vo;
  vo.round_bf16 = round_bf16_;
  return encode_image(*vision_, img, vo);
}

std::vector<float> HunyuanOcrModel::embed(const OcrSequence& seq, const std::vector<std::vector<float>>& img) const {
  const int64_t n = static_cast<int64_t>(seq.ids.size()), H = config().d_model;
  ANGELSLIM_CHECK(img.size() == seq.image_begin.size(), InvalidInput, "{} image embeddings for {} images", img.size(),
                  seq.image_begin.size());
  std::vector<float> x(static_cast<std::size_t>(n * H));
  llm_.embed(seq.ids.data(), n, x.data());
  for (std::size_t k = 0; k < img.size(); ++k) {
    const int64_t b = seq.image_begin[k];
    ANGELSLIM_CHECK(b * H + static_cast<int64_t>(img[k].size()) <= n * H, InvalidInput, "image {} runs past the end",
                    k);
    std::copy(img[k].begin(), img[k].end(), x.begin() + b * H);
  }
  return x;
}

std::vector<float> HunyuanOcrModel::hidden(const OcrSequence& seq, const std::vector<ImagePatches>& images) const {
  std::vector<std::vector<float>> emb;
  for (const auto& im : images) emb.push_back(encode(im));
  auto x = embed(seq, emb);
  return llm_.hidden_embeds(std::move(x), static_cast<int64_t>(seq.ids.size()), seq.xd_pos.data());
}

std::vector<float> HunyuanOcrModel::logits(const OcrSequence& seq, const std::vector<ImagePatches>& images) const {
  const auto h = hidden(seq, images);
  const int64_t n = static_cast<int64_t>(seq.ids.size());
  std::vector<float> out(static_cast<std::size_t>(n * config().vocab_size));
  llm_.head(h.data(), n, out.data());
  return out;
}

}  // namespace angelslim
