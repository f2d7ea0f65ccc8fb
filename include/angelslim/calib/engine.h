// Layer-streaming calibration engine (SPEC 4.1): holds the calibration activations [T, d_model] of all samples
// (ragged, no padding), runs one decoder layer at a time over them, and advances them to the next layer.
// Peak memory = one layer's weights + the activations (+ whatever statistics the algorithm keeps).
// It is the CPU implementation of CalibBackend (calib/backend.h).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "angelslim/calib/backend.h"
#include "angelslim/model/hunyuan.h"

namespace angelslim {

class CalibActivations : public CalibBackend {
 public:
  // samples: token ids per sample (each >= 1 token). Embeds them with the model's embedding table.
  CalibActivations(const ModelConfig& cfg, const TensorStore& store, const std::vector<std::vector<int32_t>>& samples);

  int64_t n_samples() const override { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t n_tokens() const override { return offsets_.back(); }
  int64_t sample_begin(int64_t s) const { return offsets_[static_cast<std::size_t>(s)]; }
  int64_t sample_len(int64_t s) const { return offsets_[static_cast<std::size_t>(s) + 1] - sample_begin(s); }
  // x: [n_tokens, d_model] fp32, samples back to back.
  const std::vector<float>& x() const { return x_; }
  // Replaces the activations (a resumed run continues from the saved inputs of its next layer).
  // Throws FormatError when `x` does not have n_tokens * d_model elements.
  void restore_activations(std::vector<float> x);

  // OCR (SPEC 4.1 step 3): overwrites the embeddings of the image tokens (token rows `rows` of the whole batch,
  // values [rows.size(), d_model]) and attaches the XD-RoPE positions [n_tokens, 4] that every layer pass uses.
  void set_multimodal(std::span<const int64_t> rows, std::span<const float> embeds, std::vector<int32_t> xd_pos);
  // [n_tokens, 4] XD-RoPE positions, or empty (plain RoPE).
  const std::vector<int32_t>& xd_positions() const { return xd_pos_; }

  // Runs `layer` over every sample without changing the activations; the observer sees each linear's input.
  void observe(const DecoderLayer& layer, LinearObserver* observer, const ForwardOptions& opt) const;
  // Runs `layer` over every sample, replacing the activations by the layer's outputs (optionally observing).
  void advance(const DecoderLayer& layer, LinearObserver* observer, const ForwardOptions& opt);

  // CalibBackend: the same passes with a HostStatsObserver.
  const char* device_name() const override { return "cpu"; }
  LayerStats observe_stats(const DecoderLayer& layer, const ForwardOptions& opt, const StatsSpec& spec) override;
  LayerStats advance_stats(const DecoderLayer& layer, const ForwardOptions& opt, const StatsSpec& spec) override;
  CalibActivations* host_activations() override { return this; }

 private:
  void run(const DecoderLayer& layer, LinearObserver* observer, const ForwardOptions& opt, float* dst) const;
  const ModelConfig& cfg_;
  std::vector<float> inv_freq_;
  std::vector<int64_t> offsets_;  // [n_samples + 1] token offsets
  std::vector<float> x_;
  std::vector<int32_t> xd_pos_;  // OCR only
};

// Forwards observations to a callback with token indices rebased to the whole calibration batch
// (the layer forward reports indices within one sample).
class OffsetObserver : public LinearObserver {
 public:
  OffsetObserver(LinearObserver* inner) : inner_(inner) {}
  void set_offset(int64_t off) { off_ = off; }
  void observe(const LinearId& id, const float* x, int64_t n, int64_t n_in, const int64_t* idx) override;
  void routed(int64_t layer, const int32_t* experts, int64_t n, int64_t k) override { inner_->routed(layer, experts, n, k); }

 private:
  LinearObserver* inner_;
  int64_t off_ = 0;
  std::vector<int64_t> buf_;
};

}  // namespace angelslim
