// HunyuanOCR (hunyuan_vl) language-model side (SPEC 3.8.4): image placeholders expanded to the adapter's token
// count, 4-axis XD-RoPE positions, the XD-RoPE op, and a whole-model wrapper (vision tower + dense LLM) for
// evaluation, generation and the goldens.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "angelslim/data/image.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/model/model_config.h"

namespace angelslim {

struct VisionTower;

// XD-RoPE in place on x [n_tokens, n_heads, head_dim]: frequency j (of head_dim/2) rotates the pair (j, j + D/2)
// by pos[t, axis(j)] * inv_freq[j], where axis(j) partitions the frequencies by `sections` (4 entries summing to
// D/2; axes p, w, h, t). pos: [n_tokens, 4]. Same rounding as cpu::rope (round_bf16: cos/sin and outputs).
void xdrope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq, const int32_t* pos,
            std::span<const int64_t> sections, bool round_bf16);

// One prompt with its images laid out for the LLM.
struct OcrSequence {
  std::vector<int32_t> ids;                   // every image placeholder expanded to n_image_tokens copies
  std::vector<int32_t> xd_pos;                // [ids.size(), 4] (p, w, h, t)
  std::vector<int64_t> image_begin;           // per image: index of its first image token (the image_begin slot)
  std::vector<std::array<int64_t, 2>> grids;  // per image: patch grid (gh, gw)
};

// Expands each image_token_id in `ids` (one placeholder per image, in order) to n_image_tokens(grid) copies and
// computes the XD-RoPE positions: all axes = sequence index, except the grid slots of image k, which get
// w = column, h = row, t = k (p unchanged). Throws InvalidInput when the placeholder count differs from
// grids.size() or a placeholder is already expanded (two adjacent placeholders).
OcrSequence layout_ocr_sequence(const ModelConfig& cfg, std::span<const int32_t> ids,
                                const std::vector<std::array<int64_t, 2>>& grids, int64_t merge_size);

// XD-RoPE positions of an already-expanded sequence (runs of image_token_id = images, in order); grids as above.
std::vector<int32_t> ocr_positions(const ModelConfig& cfg, std::span<const int32_t> ids,
                                   const std::vector<std::array<int64_t, 2>>& grids, int64_t merge_size);

// The whole OCR model, all weights resident (evaluation and generation).
class HunyuanOcrModel {
 public:
  explicit HunyuanOcrModel(const std::filesystem::path& dir, const ForwardOptions& opt = {});
  ~HunyuanOcrModel();
  const ModelConfig& config() const { return llm_.config(); }
  const HunyuanModel& llm() const { return llm_; }
  const VisionTower& vision() const { return *vision_; }
  const ImageProcessorConfig& processor() const { return processor_; }

  // Image -> LLM embeddings [n_image_tokens, d_model].
  std::vector<float> encode(const ImagePatches& img) const;
  // Token embeddings of `seq` with each image's embeddings scattered over its image tokens: [n, d_model].
  std::vector<float> embed(const OcrSequence& seq, const std::vector<std::vector<float>>& image_embeds) const;
  // Final hidden states [n, d_model] (before the final norm) and logits [n, vocab].
  std::vector<float> hidden(const OcrSequence& seq, const std::vector<ImagePatches>& images) const;
  std::vector<float> logits(const OcrSequence& seq, const std::vector<ImagePatches>& images) const;

 private:
  HunyuanModel llm_;
  std::unique_ptr<VisionTower> vision_;
  ImageProcessorConfig processor_;
  bool round_bf16_ = false;
};

}  // namespace angelslim
