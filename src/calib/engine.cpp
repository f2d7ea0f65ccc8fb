// Layer-streaming calibration activations; see include/angelslim/calib/engine.h.
#include "angelslim/calib/engine.h"

#include <algorithm>

#include "angelslim/core/error.h"
#include "angelslim/model/weight_loader.h"

namespace angelslim {

CalibActivations::CalibActivations(const ModelConfig& cfg, const TensorStore& store,
                                   const std::vector<std::vector<int32_t>>& samples)
    : cfg_(cfg), inv_freq_(rope_inv_freq(cfg)) {
  offsets_.push_back(0);
  for (const auto& s : samples) {
    ANGELSLIM_ASSERT(!s.empty());
    offsets_.push_back(offsets_.back() + static_cast<int64_t>(s.size()));
  }
  const int64_t H = cfg.d_model;
  const auto& emb = store.get("model.embed_tokens.weight");
  if (emb.shape != std::vector<int64_t>{cfg.vocab_size, H})
    throw FormatError(fmt::format("{}: model.embed_tokens.weight has the wrong shape", store.dir().string()));
  x_.resize(static_cast<std::size_t>(n_tokens() * H));
  const std::size_t row_bytes = static_cast<std::size_t>(H) * dtype_size(emb.dtype);
  int64_t t = 0;
  for (const auto& s : samples)
    for (int32_t id : s) {
      if (id < 0 || id >= cfg.vocab_size)
        throw InvalidInput(fmt::format("calibration token id {} is outside the vocabulary [0, {})", id, cfg.vocab_size));
      convert_to_f32(emb.dtype, emb.data + row_bytes * static_cast<std::size_t>(id), x_.data() + t * H,
                     static_cast<std::size_t>(H));
      ++t;
    }
}

void CalibActivations::restore_activations(std::vector<float> x) {
  if (x.size() != x_.size())
    throw FormatError(fmt::format("saved calibration activations have {} values, expected {} ({} tokens x {})",
                                  x.size(), x_.size(), n_tokens(), cfg_.d_model));
  x_ = std::move(x);
}

void CalibActivations::set_multimodal(std::span<const int64_t> rows, std::span<const float> embeds,
                                      std::vector<int32_t> xd_pos) {
  const int64_t H = cfg_.d_model;
  ANGELSLIM_ASSERT(static_cast<int64_t>(embeds.size()) == static_cast<int64_t>(rows.size()) * H);
  ANGELSLIM_ASSERT(static_cast<int64_t>(xd_pos.size()) == n_tokens() * 4);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    ANGELSLIM_ASSERT(rows[i] >= 0 && rows[i] < n_tokens());
    std::copy(embeds.begin() + static_cast<std::ptrdiff_t>(i) * H, embeds.begin() + static_cast<std::ptrdiff_t>(i + 1) * H,
              x_.begin() + rows[i] * H);
  }
  xd_pos_ = std::move(xd_pos);
}

void OffsetObserver::observe(const LinearId& id, const float* x, int64_t n, int64_t n_in, const int64_t* idx) {
  if (!idx) {
    buf_.resize(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) buf_[static_cast<std::size_t>(i)] = off_ + i;
  } else {
    buf_.assign(idx, idx + n);
    for (auto& v : buf_) v += off_;
  }
  inner_->observe(id, x, n, n_in, buf_.data());
}

void CalibActivations::run(const DecoderLayer& layer, LinearObserver* observer, const ForwardOptions& opt,
                           float* dst) const {
  // Samples go through the layer in ragged batches of about kBatchTokens tokens: GEMMs and observers see many
  // tokens at once, attention stays per sample. Results do not depend on the batching beyond fp32 summation order.
  constexpr int64_t kBatchTokens = 4096;
  const int64_t H = cfg_.d_model;
  OffsetObserver off(observer);
  std::vector<float> buf;
  std::vector<int64_t> segs;
  for (int64_t s0 = 0; s0 < n_samples();) {
    int64_t s1 = s0 + 1;
    while (s1 < n_samples() && sample_begin(s1 + 1) - sample_begin(s0) <= kBatchTokens) ++s1;
    const int64_t b = sample_begin(s0), n = sample_begin(s1) - b;
    segs.assign(1, 0);
    for (int64_t s = s0; s < s1; ++s) segs.push_back(sample_begin(s + 1) - b);
    float* x;
    if (!dst) {
      buf.assign(x_.begin() + b * H, x_.begin() + (b + n) * H);
      x = buf.data();
    } else {
      x = dst + b * H;
    }
    off.set_offset(b);
    ForwardOptions o = opt;
    if (!xd_pos_.empty()) o.xd_pos = xd_pos_.data() + b * 4;
    decoder_layer_forward(cfg_, layer, inv_freq_, x, n, 0, o, observer ? &off : nullptr, nullptr, segs);
    s0 = s1;
  }
}

void CalibActivations::observe(const DecoderLayer& layer, LinearObserver* observer, const ForwardOptions& opt) const {
  run(layer, observer, opt, nullptr);
}

void CalibActivations::advance(const DecoderLayer& layer, LinearObserver* observer, const ForwardOptions& opt) {
  ANGELSLIM_ASSERT(opt.stop_after == StopAfter::kNone);
  run(layer, observer, opt, x_.data());
}

LayerStats CalibActivations::observe_stats(const DecoderLayer& layer, const ForwardOptions& opt,
                                           const StatsSpec& spec) {
  HostStatsObserver obs(spec);
  observe(layer, spec.any() ? &obs : nullptr, opt);
  return obs.take();
}

LayerStats CalibActivations::advance_stats(const DecoderLayer& layer, const ForwardOptions& opt,
                                           const StatsSpec& spec) {
  HostStatsObserver obs(spec);
  advance(layer, spec.any() ? &obs : nullptr, opt);
  return obs.take();
}

}  // namespace angelslim
