// GPU decoder layer: the CPU decoder_layer_forward (src/model/hunyuan.cpp, SPEC 3.2-3.6) written against the CUDA
// ops, step for step and in the same order (observers included), so the two agree up to fp32 summation order.
#include "angelslim/backend/cuda_layer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "angelslim/core/dtype.h"

namespace angelslim::cuda {

CudaKvCache::CudaKvCache(int64_t capacity, int64_t kv_dim) : capacity_(capacity), kv_dim_(kv_dim) {
  ANGELSLIM_CHECK(capacity >= 0 && kv_dim > 0, InvalidInput,
                  "CudaKvCache: capacity {} / kv_dim {} (expected >= 0 / > 0)", capacity, kv_dim);
  k_.reset(static_cast<std::size_t>(capacity * kv_dim));
  v_.reset(static_cast<std::size_t>(capacity * kv_dim));
}

int64_t CudaKvCache::append(int64_t n) {
  ANGELSLIM_CHECK(n >= 0 && n_ + n <= capacity_, InvalidInput,
                  "CudaKvCache: appending {} tokens to {} cached exceeds the capacity {}", n, n_, capacity_);
  const int64_t old = n_;
  n_ += n;
  return old;
}

AttentionPath attention_path() {
  static const AttentionPath p = [] {
    const char* e = std::getenv("ANGELSLIM_CUDA_ATTENTION");
    const std::string v = e ? e : "";
    if (v == "tiled") return AttentionPath::kTiled;
    if (v == "gemm") return AttentionPath::kGemm;
    ANGELSLIM_CHECK(v.empty() || v == "fused", InvalidInput,
                    "ANGELSLIM_CUDA_ATTENTION = '{}' (expected fused, gemm or tiled)", v);
    return cuda_legacy() ? AttentionPath::kGemm : AttentionPath::kFused;
  }();
  return p;
}

const char* attention_path_name(AttentionPath p) {
  switch (p) {
    case AttentionPath::kFused:
      return "fused bf16 tensor-core kernel (ragged batch)";
    case AttentionPath::kGemm:
      return "bf16 tensor-core GEMMs";
    case AttentionPath::kTiled:
      break;
  }
  return "fp32 tiled kernel";
}

WeightStager::WeightStager(CudaContext& ctx) : ctx_(ctx) {
  for (auto& e : done_) ANGELSLIM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
}

WeightStager::~WeightStager() {
  for (auto e : done_)
    if (e) {
      (void)cudaEventSynchronize(e);
      (void)cudaEventDestroy(e);
    }
}

const float* WeightStager::stage(const float* w, std::size_t n) {
  if (n == 0) return dev_.data();
  if (n > dev_.size()) dev_.reset(n);
  if (pinned_[0].size() == 0) {
    pinned_[0].reset(kChunk);
    pinned_[1].reset(kChunk);
  }
  // Double buffering: the host copy into one pinned chunk overlaps the DMA out of the other.
  int slot = 0;
  for (std::size_t off = 0; off < n; off += kChunk, slot ^= 1) {
    const std::size_t m = std::min(kChunk, n - off);
    ANGELSLIM_CUDA_CHECK(cudaEventSynchronize(done_[slot]));  // the DMA that last read this chunk has finished
    host_copy(pinned_[slot].data(), w + off, m * sizeof(float));
    ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(dev_.data() + off, pinned_[slot].data(), m * sizeof(float),
                                         cudaMemcpyHostToDevice, ctx_.stream()));
    ANGELSLIM_CUDA_CHECK(cudaEventRecord(done_[slot], ctx_.stream()));
  }
  bytes_ += static_cast<int64_t>(n * sizeof(float));
  return dev_.data();
}

uint16_t* WeightStager::scratch16(int i, std::size_t n) {
  ANGELSLIM_ASSERT(i == 0 || i == 1);
  if (n > dev16_[i].size()) dev16_[i].reset(n);
  return dev16_[i].data();
}

DeviceBuffer<float> CudaDecoderLayer::upload_vec(const std::vector<float>& v) {
  weight_bytes_ += v.size() * sizeof(float);
  return to_device(ctx_, v);
}

namespace {

// dst gets n elements: a buffer of that size from `pool` (no cudaMalloc/cudaFree, which would synchronise the
// device), else a new one.
template <class T>
void reuse_or_reset(DeviceBuffer<T>& dst, std::size_t n, std::vector<DeviceBuffer<T>>& pool) {
  for (auto it = pool.begin(); it != pool.end(); ++it)
    if (it->size() == n) {
      dst = std::move(*it);
      pool.erase(it);
      return;
    }
  dst.reset(n);
}

}  // namespace

void CudaDecoderLayer::recycle(Lin& l) {
  for (auto* b : {&l.w16, &l.w16_lo, &l.w16_lo2})
    if (!b->empty()) s_.weights16.push_back(std::move(*b));
  if (!l.w32.empty()) s_.weights32.push_back(std::move(l.w32));
}

void CudaDecoderLayer::free_recycled() {
  s_.weights16.clear();
  s_.weights32.clear();
}

CudaDecoderLayer::Lin CudaDecoderLayer::upload_linear(const Linear& l, const char* what, const float* device_w) {
  ANGELSLIM_CHECK(l.n_out > 0 && l.n_in > 0 && (device_w || l.w.size() == static_cast<std::size_t>(l.n_out * l.n_in)),
                  InvalidInput, "layer {} {}: weight has {} values, expected [{}, {}]", index_, what, l.w.size(),
                  l.n_out, l.n_in);
  ANGELSLIM_ASSERT(!device_w || weights_ != DeviceWeights::kBF16);
  ANGELSLIM_CHECK(l.bias.empty() || l.bias.size() == static_cast<std::size_t>(l.n_out), InvalidInput,
                  "layer {} {}: bias has {} values, expected {}", index_, what, l.bias.size(), l.n_out);
  Lin d;
  d.n_out = l.n_out;
  d.n_in = l.n_in;
  d.act = l.act;
  if (weights_ == DeviceWeights::kF32 && device_w) {
    const std::size_t n = static_cast<std::size_t>(l.n_out * l.n_in);
    reuse_or_reset(d.w32, n, s_.weights32);
    ANGELSLIM_CUDA_CHECK(
        cudaMemcpyAsync(d.w32.data(), device_w, n * sizeof(float), cudaMemcpyDeviceToDevice, ctx_.stream()));
    ctx_.synchronize();  // the source may be reused once this returns (as after the bf16 path's count download)
    weight_bytes_ += n * sizeof(float);
  } else if (weights_ == DeviceWeights::kF32) {
    d.w32 = upload_vec(l.w);
  } else if (weights_ == DeviceWeights::kBF16Exact) {
    const std::size_t n = static_cast<std::size_t>(l.n_out * l.n_in);
    const float* dw = device_w ? device_w : stager_->stage(l.w.data(), n);
    reuse_or_reset(d.w16, n, s_.weights16);
    uint16_t* t1 = stager_->scratch16(0, n);
    uint16_t* t2 = stager_->scratch16(1, n);
    s_.split_counts.ensure(3);
    ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(s_.split_counts.data(), 0, 3 * sizeof(unsigned int), ctx_.stream()));
    split_bf16_terms(ctx_, dw, static_cast<int64_t>(n), d.w16.data(), t1, t2, s_.split_counts.data());
    unsigned int counts[3];
    download(ctx_, s_.split_counts.data(), 3, counts);
    weight_bytes_ += n * sizeof(uint16_t);
    // Keep a term only when some element needs it (a bf16 checkpoint: never).
    auto keep = [&](const uint16_t* t, DeviceBuffer<uint16_t>& dst) {
      reuse_or_reset(dst, n, s_.weights16);
      ANGELSLIM_CUDA_CHECK(
          cudaMemcpyAsync(dst.data(), t, n * sizeof(uint16_t), cudaMemcpyDeviceToDevice, ctx_.stream()));
      weight_bytes_ += n * sizeof(uint16_t);
    };
    if (counts[0]) {
      keep(t1, d.w16_lo);
      ++n_terms_[0];
    }
    if (counts[1]) {
      keep(t2, d.w16_lo2);
      ++n_terms_[1];
    }
    n_terms_[2] += counts[2];
  } else {
    std::vector<uint16_t> h(l.w.size());
    for (std::size_t i = 0; i < h.size(); ++i) {
      h[i] = ::angelslim::f32_to_bf16(l.w[i]);
      if (f32_to_bits(::angelslim::bf16_to_f32(h[i])) != f32_to_bits(l.w[i]) && !std::isnan(l.w[i])) ++n_rounded_;
    }
    d.w16 = to_device(ctx_, h);
    weight_bytes_ += h.size() * sizeof(uint16_t);
  }
  if (!l.bias.empty()) d.bias = upload_vec(l.bias);
  if (l.act == ActQuant::kFp8Static) {
    ANGELSLIM_CHECK(std::isfinite(l.input_scale) && l.input_scale > 0.0f, InvalidInput,
                    "layer {} {}: input_scale = {} (expected finite, > 0)", index_, what, l.input_scale);
    d.input_scale = upload_vec({l.input_scale});
  }
  return d;
}

CudaDecoderLayer::DevMlp CudaDecoderLayer::upload_mlp(const Mlp& m, const char* what) {
  DevMlp d;
  d.gate = upload_linear(m.gate, what);
  d.up = upload_linear(m.up, what);
  d.down = upload_linear(m.down, what);
  return d;
}

CudaDecoderLayer::CudaDecoderLayer(CudaContext& ctx, const ModelConfig& cfg, const DecoderLayer& layer,
                                   const std::vector<float>& inv_freq, DeviceWeights weights, WeightStager* stager,
                                   Scratch scratch)
    : ctx_(ctx), stager_(stager), cfg_(cfg), weights_(weights), index_(layer.index), s_(std::move(scratch)) {
  ANGELSLIM_CHECK(weights != DeviceWeights::kBF16Exact || stager != nullptr, InvalidInput,
                  "CudaDecoderLayer: kBF16Exact weights need a WeightStager");
  const int64_t d_model = cfg.d_model, head_dim = cfg.head_dim;
  ANGELSLIM_CHECK(head_dim == 64 || head_dim == 128, Unsupported,
                  "CudaDecoderLayer: head_dim = {} (the GPU attention handles 64, 128)", head_dim);
  ANGELSLIM_CHECK(cfg.n_kv_heads > 0 && cfg.n_heads % cfg.n_kv_heads == 0, InvalidInput,
                  "CudaDecoderLayer: n_heads {} is not a multiple of n_kv_heads {}", cfg.n_heads, cfg.n_kv_heads);
  ANGELSLIM_CHECK(inv_freq.size() == static_cast<std::size_t>(head_dim / 2), InvalidInput,
                  "CudaDecoderLayer: inv_freq has {} values, expected head_dim/2 = {}", inv_freq.size(), head_dim / 2);
  ANGELSLIM_CHECK(
      layer.input_norm.size() == static_cast<std::size_t>(d_model) && layer.post_norm.size() == layer.input_norm.size(),
      InvalidInput, "layer {}: norm weights have {}/{} values, expected d_model = {}", index_, layer.input_norm.size(),
      layer.post_norm.size(), d_model);
  if (cfg.use_qk_norm)
    ANGELSLIM_CHECK(
        layer.q_norm.size() == static_cast<std::size_t>(head_dim) && layer.k_norm.size() == layer.q_norm.size(),
        InvalidInput, "layer {}: QK-norm weights have {}/{} values, expected head_dim = {}", index_,
        layer.q_norm.size(), layer.k_norm.size(), head_dim);
  inv_freq_ = to_device(ctx_, inv_freq);
  input_norm_ = upload_vec(layer.input_norm);
  post_norm_ = upload_vec(layer.post_norm);
  if (cfg.use_qk_norm) {
    q_norm_ = upload_vec(layer.q_norm);
    k_norm_ = upload_vec(layer.k_norm);
  }
  q_ = upload_linear(layer.q, "self_attn.q_proj");
  k_ = upload_linear(layer.k, "self_attn.k_proj");
  v_ = upload_linear(layer.v, "self_attn.v_proj");
  o_ = upload_linear(layer.o, "self_attn.o_proj");
  ANGELSLIM_CHECK(q_.n_out == cfg.n_heads * head_dim && k_.n_out == cfg.n_kv_heads * head_dim && v_.n_out == k_.n_out &&
                      q_.n_in == d_model && k_.n_in == d_model && v_.n_in == d_model && o_.n_in == q_.n_out &&
                      o_.n_out == d_model,
                  InvalidInput, "layer {}: attention projection shapes do not match the config", index_);
  is_moe_ = layer.is_moe;
  if (is_moe_) {
    ANGELSLIM_CHECK(cfg.n_experts >= 1 && cfg.n_experts <= 256, Unsupported,
                    "CudaDecoderLayer: {} experts (the GPU router handles 1..256)", cfg.n_experts);
    ANGELSLIM_CHECK(layer.top_k >= 1 && layer.top_k <= cfg.n_experts, InvalidInput,
                    "layer {}: top_k = {} with {} experts", index_, layer.top_k, cfg.n_experts);
    ANGELSLIM_CHECK(layer.router.size() == static_cast<std::size_t>(cfg.n_experts * d_model) &&
                        layer.experts.size() == static_cast<std::size_t>(cfg.n_experts),
                    InvalidInput, "layer {}: router has {} values / {} experts, expected [{}, {}] / {}", index_,
                    layer.router.size(), layer.experts.size(), cfg.n_experts, d_model, cfg.n_experts);
    top_k_ = layer.top_k;
    router_ = upload_vec(layer.router);
    has_shared_ = layer.has_shared;
    if (has_shared_) mlp_ = upload_mlp(layer.mlp, "mlp.shared_mlp");
    for (const auto& e : layer.experts) experts_.push_back(upload_mlp(e, "mlp.experts"));
  } else {
    mlp_ = upload_mlp(layer.mlp, "mlp");
  }
  free_recycled();  // the previous layer's buffers no upload took
}

void CudaDecoderLayer::check_mode(const ForwardOptions& opt) const {
  ANGELSLIM_CHECK(opt.round_bf16 || weights_ == DeviceWeights::kF32, InvalidInput,
                  "layer {}: the fp32 reference forward needs fp32 device weights (uploaded as bf16)", index_);
}

void CudaDecoderLayer::ensure_scratch(int64_t n) {
  const auto un = static_cast<std::size_t>(n);
  const auto d_model = static_cast<std::size_t>(cfg_.d_model);
  const auto qd = static_cast<std::size_t>(cfg_.n_heads * cfg_.head_dim);
  const auto kvd = static_cast<std::size_t>(cfg_.n_kv_heads * cfg_.head_dim);
  std::size_t dff = static_cast<std::size_t>(mlp_.gate.n_out);
  for (const auto& e : experts_) dff = std::max(dff, static_cast<std::size_t>(e.gate.n_out));
  const std::size_t max_in = std::max({d_model, qd, dff});
  s_.a.ensure(un * d_model);
  s_.o_buf.ensure(un * d_model);
  s_.q_buf.ensure(un * qd);
  s_.attn.ensure(un * qd);
  s_.k_buf.ensure(un * kvd);
  s_.v_buf.ensure(un * kvd);
  s_.g.ensure(un * dff);
  s_.u.ensure(un * dff);
  s_.xq.ensure(un * max_in);
  s_.x16.ensure(un * max_in);
  s_.amax.ensure(1);
  s_.dyn_scale.ensure(1);
  if (is_moe_) {
    const auto n_experts = static_cast<std::size_t>(cfg_.n_experts), k = static_cast<std::size_t>(top_k_);
    s_.logits.ensure(un * n_experts);
    s_.top.ensure(un * k);
    s_.wts.ensure(un * k);
    s_.slot_w.ensure(un * k);
    s_.token_index.ensure(un * k);
    s_.offsets.ensure(n_experts + 1);
    s_.xin.ensure(un * d_model);
    s_.y.ensure(un * d_model);
    s_.shared.ensure(un * d_model);
  }
}

void CudaDecoderLayer::observe(CudaLinearObserver* obs, LinearKind kind, int64_t expert, bool shared, const float* x,
                               int64_t n, int64_t n_in, const int64_t* token_index) {
  if (!obs) return;
  obs->observe(ctx_, LinearId{index_, kind, expert, shared}, x, n, n_in, token_index);
}

void CudaDecoderLayer::apply_linear(const Lin& lin, const float* x, int64_t n, float* y, bool rb) {
  if (n == 0) return;
  const int64_t count = n * lin.n_in;
  const float* scale = nullptr;
  if (lin.act == ActQuant::kFp8Dynamic) {
    abs_max(ctx_, x, count, s_.amax.data());
    fp8_scale_from_amax(ctx_, s_.amax.data(), s_.dyn_scale.data());
    scale = s_.dyn_scale.data();
  } else if (lin.act == ActQuant::kFp8Static) {
    scale = lin.input_scale.data();
  }
  const float* bias = lin.bias.empty() ? nullptr : lin.bias.data();
  if (weights_ == DeviceWeights::kF32) {
    const float* in = x;
    if (scale) {
      fake_quant_fp8(ctx_, x, count, scale, s_.xq.data());
      in = s_.xq.data();
    }
    linear(ctx_, in, n, lin.n_in, lin.w32.data(), lin.n_out, bias, y);
    if (rb) round_bf16_inplace(ctx_, y, n * lin.n_out);
  } else {
    // bf16 mode: x is bf16-representable, and so are the fp8 codes; (q·Wᵀ)·s equals the CPU's (q·s)·Wᵀ up to
    // the rounding of the scale products.
    if (scale)
      quant_fp8_bf16(ctx_, x, count, scale, s_.x16.data());
    else
      f32_to_bf16(ctx_, x, s_.x16.data(), count);
    linear_bf16(ctx_, s_.x16.data(), n, lin.n_in, lin.w16.data(), lin.n_out, nullptr, y);
    if (!lin.w16_lo.empty())
      linear_bf16(ctx_, s_.x16.data(), n, lin.n_in, lin.w16_lo.data(), lin.n_out, nullptr, y, 1, 1);
    if (!lin.w16_lo2.empty())
      linear_bf16(ctx_, s_.x16.data(), n, lin.n_in, lin.w16_lo2.data(), lin.n_out, nullptr, y, 1, 1);
    bias_scale(ctx_, y, n, lin.n_out, scale, bias, rb);
  }
}

void CudaDecoderLayer::mlp_forward(const DevMlp& mlp, const float* m, int64_t n, float* out, bool rb,
                                   CudaLinearObserver* obs, int64_t expert, bool shared, const int64_t* token_index) {
  const int64_t dff = mlp.gate.n_out;
  observe(obs, LinearKind::kGate, expert, shared, m, n, mlp.gate.n_in, token_index);
  observe(obs, LinearKind::kUp, expert, shared, m, n, mlp.up.n_in, token_index);
  apply_linear(mlp.gate, m, n, s_.g.data(), rb);
  apply_linear(mlp.up, m, n, s_.u.data(), rb);
  swiglu(ctx_, s_.g.data(), s_.u.data(), s_.g.data(), n * dff, rb);
  observe(obs, LinearKind::kDown, expert, shared, s_.g.data(), n, dff, token_index);
  apply_linear(mlp.down, s_.g.data(), n, out, rb);
}

void CudaDecoderLayer::moe_forward(const float* m, int64_t n, float* out, bool rb, CudaLinearObserver* obs) {
  const int64_t d_model = cfg_.d_model, n_experts = cfg_.n_experts, k = top_k_;
  // Router in fp32 in both modes (SPEC 3.6): logits, softmax, top-k (lower index on ties), renormalise.
  linear(ctx_, m, n, d_model, router_.data(), n_experts, nullptr, s_.logits.data());
  moe_route(ctx_, s_.logits.data(), n, n_experts, k, s_.top.data(), s_.wts.data(), rb);
  if (obs) obs->routed(ctx_, index_, s_.top.data(), n, k);
  moe_expert_lists(ctx_, s_.top.data(), s_.wts.data(), n, k, n_experts, s_.offsets.data(), s_.token_index.data(),
                   s_.slot_w.data());
  offsets_host_.resize(static_cast<std::size_t>(n_experts + 1));
  download(ctx_, s_.offsets.data(), offsets_host_.size(), offsets_host_.data());  // sizes the per-expert GEMMs
  ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float) * static_cast<std::size_t>(n * d_model), ctx_.stream()));
  // Experts one after another in index order: each token's sum is accumulated in the CPU's order.
  for (int64_t e = 0; e < n_experts; ++e) {
    const int64_t begin = offsets_host_[static_cast<std::size_t>(e)];
    const int64_t ne = offsets_host_[static_cast<std::size_t>(e) + 1] - begin;
    if (ne == 0) continue;
    const int64_t* idx = s_.token_index.data() + begin;
    gather_rows(ctx_, m, d_model, idx, ne, s_.xin.data());
    mlp_forward(experts_[static_cast<std::size_t>(e)], s_.xin.data(), ne, s_.y.data(), rb, obs, e, false, idx);
    scatter_add_rows(ctx_, s_.y.data(), d_model, idx, s_.slot_w.data() + begin, ne, out, rb);
  }
  if (rb) round_bf16_inplace(ctx_, out, n * d_model);
  if (has_shared_) {
    mlp_forward(mlp_, m, n, s_.shared.data(), rb, obs, -1, true, nullptr);
    add(ctx_, out, s_.shared.data(), out, n * d_model, rb);
  }
}

void CudaDecoderLayer::attention_block(const float* a, int64_t n, int64_t pos0, const ForwardOptions& opt,
                                       CudaLinearObserver* obs, CudaKvCache* cache, float* out,
                                       std::span<const int64_t> seq_offsets) {
  check_mode(opt);
  ANGELSLIM_CHECK(n >= 0 && pos0 >= 0, InvalidInput, "layer {}: n_tokens {} / pos0 {} (expected >= 0)", index_, n,
                  pos0);
  const int64_t single[2] = {0, n};
  const std::span<const int64_t> segs = seq_offsets.empty() ? std::span<const int64_t>(single) : seq_offsets;
  ANGELSLIM_CHECK(segs.size() >= 2 && segs.front() == 0 && segs.back() == n, InvalidInput,
                  "layer {}: seq_offsets must run from 0 to n_tokens = {}", index_, n);
  ANGELSLIM_CHECK(segs.size() == 2 || (pos0 == 0 && cache == nullptr), InvalidInput,
                  "layer {}: a ragged batch needs pos0 = 0 and no KV cache", index_);
  ensure_scratch(n);
  const bool rb = opt.round_bf16;
  const int64_t d_model = cfg_.d_model, head_dim = cfg_.head_dim, n_heads = cfg_.n_heads, n_kv_heads = cfg_.n_kv_heads;
  const int64_t qd = n_heads * head_dim, kvd = n_kv_heads * head_dim;
  observe(obs, LinearKind::kQ, -1, false, a, n, d_model, nullptr);
  observe(obs, LinearKind::kK, -1, false, a, n, d_model, nullptr);
  observe(obs, LinearKind::kV, -1, false, a, n, d_model, nullptr);
  if (opt.stop_after == StopAfter::kQkvInput) return;
  apply_linear(q_, a, n, s_.q_buf.data(), rb);
  apply_linear(k_, a, n, s_.k_buf.data(), rb);
  apply_linear(v_, a, n, s_.v_buf.data(), rb);
  // RoPE first, then QK-norm (SPEC 3.4); every sequence of a ragged batch starts at position pos0 = 0.
  for (std::size_t si = 0; si + 1 < segs.size(); ++si) {
    const int64_t b = segs[si], len = segs[si + 1] - b;
    rope(ctx_, s_.q_buf.data() + b * qd, len, n_heads, head_dim, inv_freq_.data(), pos0, rb);
    rope(ctx_, s_.k_buf.data() + b * kvd, len, n_kv_heads, head_dim, inv_freq_.data(), pos0, rb);
  }
  if (cfg_.use_qk_norm) {
    rms_norm(ctx_, s_.q_buf.data(), n * n_heads, head_dim, q_norm_.data(), cfg_.rms_norm_eps, s_.q_buf.data(), rb);
    rms_norm(ctx_, s_.k_buf.data(), n * n_kv_heads, head_dim, k_norm_.data(), cfg_.rms_norm_eps, s_.k_buf.data(), rb);
  }
  const float* kp = s_.k_buf.data();
  const float* vp = s_.v_buf.data();
  int64_t n_past = 0;
  if (cache) {
    ANGELSLIM_CHECK(cache->kv_dim() == kvd, InvalidInput, "layer {}: KV cache rows have {} values, expected {}", index_,
                    cache->kv_dim(), kvd);
    n_past = cache->append(n);
    const std::size_t bytes = sizeof(float) * static_cast<std::size_t>(n * kvd);
    const std::size_t off = static_cast<std::size_t>(n_past * kvd);
    if (bytes) {
      ANGELSLIM_CUDA_CHECK(
          cudaMemcpyAsync(cache->k() + off, s_.k_buf.data(), bytes, cudaMemcpyDeviceToDevice, ctx_.stream()));
      ANGELSLIM_CUDA_CHECK(
          cudaMemcpyAsync(cache->v() + off, s_.v_buf.data(), bytes, cudaMemcpyDeviceToDevice, ctx_.stream()));
    }
    kp = cache->k();
    vp = cache->v();
  }
  const AttentionPath path = attention_path();
  if (rb && cache == nullptr && path == AttentionPath::kFused) {
    // bf16 mode from position 0: every sequence of the batch in one fused tensor-core launch.
    attention_varlen_bf16(ctx_, s_.q_buf.data(), kp, vp, segs, n_heads, n_kv_heads, head_dim, s_.attn.data(),
                          s_.varlen_ws);
  } else if (rb && cache == nullptr && path == AttentionPath::kGemm) {
    // bf16 mode from position 0: the tensor-core path (the same math up to summation order, ~6x faster at 2k tokens).
    for (std::size_t si = 0; si + 1 < segs.size(); ++si) {
      const int64_t b = segs[si], len = segs[si + 1] - b;
      attention_bf16_gemm(ctx_, s_.q_buf.data() + b * qd, kp + b * kvd, vp + b * kvd, len, n_heads, n_kv_heads,
                          head_dim, s_.attn.data() + b * qd, s_.attn_ws);
    }
  } else if (segs.size() == 2) {
    attention(ctx_, s_.q_buf.data(), kp, vp, n, n_past, n_heads, n_kv_heads, head_dim, s_.attn.data(), rb);
  } else {
    for (std::size_t si = 0; si + 1 < segs.size(); ++si) {
      const int64_t b = segs[si], len = segs[si + 1] - b;
      attention(ctx_, s_.q_buf.data() + b * qd, kp + b * kvd, vp + b * kvd, len, 0, n_heads, n_kv_heads, head_dim,
                s_.attn.data() + b * qd, rb);
    }
  }
  observe(obs, LinearKind::kO, -1, false, s_.attn.data(), n, qd, nullptr);
  if (opt.stop_after == StopAfter::kOInput) return;
  apply_linear(o_, s_.attn.data(), n, out, rb);
}

void CudaDecoderLayer::ffn_block(const float* m, int64_t n, const ForwardOptions& opt, CudaLinearObserver* obs,
                                 float* out) {
  check_mode(opt);
  ANGELSLIM_CHECK(n >= 0, InvalidInput, "layer {}: n_tokens {} (expected >= 0)", index_, n);
  ensure_scratch(n);
  if (n == 0) return;
  if (is_moe_)
    moe_forward(m, n, out, opt.round_bf16, obs);
  else
    mlp_forward(mlp_, m, n, out, opt.round_bf16, obs, -1, false, nullptr);
}

void CudaDecoderLayer::forward(float* x, int64_t n, int64_t pos0, const ForwardOptions& opt, CudaLinearObserver* obs,
                               CudaKvCache* cache, std::span<const int64_t> seq_offsets) {
  check_mode(opt);
  ANGELSLIM_CHECK(n >= 0, InvalidInput, "layer {}: n_tokens {} (expected >= 0)", index_, n);
  if (n == 0) return;
  ensure_scratch(n);
  const bool rb = opt.round_bf16;
  const int64_t d_model = cfg_.d_model;
  rms_norm(ctx_, x, n, d_model, input_norm_.data(), cfg_.rms_norm_eps, s_.a.data(), rb);
  attention_block(s_.a.data(), n, pos0, opt, obs, cache, s_.o_buf.data(), seq_offsets);
  if (opt.stop_after == StopAfter::kQkvInput || opt.stop_after == StopAfter::kOInput) return;
  add(ctx_, x, s_.o_buf.data(), x, n * d_model, rb);
  rms_norm(ctx_, x, n, d_model, post_norm_.data(), cfg_.rms_norm_eps, s_.a.data(), rb);
  if (opt.stop_after == StopAfter::kMlpInput && !is_moe_) {
    // Dense MLP: its gate/up input is the norm output (routed experts need the router, so MoE runs on), as on the CPU.
    observe(obs, LinearKind::kGate, -1, false, s_.a.data(), n, d_model, nullptr);
    observe(obs, LinearKind::kUp, -1, false, s_.a.data(), n, d_model, nullptr);
    return;
  }
  ffn_block(s_.a.data(), n, opt, obs, s_.o_buf.data());
  add(ctx_, x, s_.o_buf.data(), x, n * d_model, rb);
}

CudaDecoderLayer::Scratch CudaDecoderLayer::take_scratch() {
  for (Lin* l : {&q_, &k_, &v_, &o_, &mlp_.gate, &mlp_.up, &mlp_.down}) recycle(*l);
  for (auto& e : experts_)
    for (Lin* l : {&e.gate, &e.up, &e.down}) recycle(*l);
  return std::exchange(s_, Scratch{});
}

float* CudaDecoderLayer::attn_scratch(int64_t n) {
  ensure_scratch(n);
  return s_.attn.data();
}

float* CudaDecoderLayer::down_input_scratch(int64_t n) {
  ANGELSLIM_CHECK(!is_moe_, InvalidInput, "layer {}: down_input_scratch is for dense layers", index_);
  ensure_scratch(n);
  return s_.g.data();
}

void CudaDecoderLayer::forward_from(Start start, float* x, int64_t n, const ForwardOptions& opt,
                                    CudaLinearObserver* obs, std::span<const int64_t> seq_offsets, bool observe_only) {
  if (start == Start::kInput && !observe_only) {
    forward(x, n, 0, opt, obs, nullptr, seq_offsets);
    return;
  }
  check_mode(opt);
  ANGELSLIM_CHECK(n >= 0, InvalidInput, "layer {}: n_tokens {} (expected >= 0)", index_, n);
  ANGELSLIM_CHECK(start != Start::kDownInput || !is_moe_, InvalidInput,
                  "layer {}: a pass from the down_proj input needs a dense layer", index_);
  if (n == 0) return;
  ensure_scratch(n);
  const bool rb = opt.round_bf16;
  const int64_t d_model = cfg_.d_model, qd = cfg_.n_heads * cfg_.head_dim;
  if (start == Start::kInput) {
    rms_norm(ctx_, x, n, d_model, input_norm_.data(), cfg_.rms_norm_eps, s_.a.data(), rb);
    attention_block(s_.a.data(), n, 0, opt, obs, nullptr, s_.o_buf.data(), seq_offsets);
    if (opt.stop_after == StopAfter::kQkvInput || opt.stop_after == StopAfter::kOInput) return;
  } else if (start == Start::kAttn) {
    // attention_block's tail: observe the o_proj input, then o_proj.
    observe(obs, LinearKind::kO, -1, false, s_.attn.data(), n, qd, nullptr);
    if (opt.stop_after == StopAfter::kOInput) return;
    apply_linear(o_, s_.attn.data(), n, s_.o_buf.data(), rb);
  }
  if (start == Start::kInput || start == Start::kAttn) add(ctx_, x, s_.o_buf.data(), x, n * d_model, rb);
  if (start == Start::kDownInput) {
    ANGELSLIM_CHECK(opt.stop_after == StopAfter::kNone, InvalidInput,
                    "layer {}: a pass from the down_proj input cannot stop before it", index_);
    observe(obs, LinearKind::kDown, -1, false, s_.g.data(), n, mlp_.down.n_in, nullptr);
    if (observe_only) return;
    apply_linear(mlp_.down, s_.g.data(), n, s_.o_buf.data(), rb);
    add(ctx_, x, s_.o_buf.data(), x, n * d_model, rb);
    return;
  }
  rms_norm(ctx_, x, n, d_model, post_norm_.data(), cfg_.rms_norm_eps, s_.a.data(), rb);
  if (opt.stop_after == StopAfter::kMlpInput && !is_moe_) {
    observe(obs, LinearKind::kGate, -1, false, s_.a.data(), n, d_model, nullptr);
    observe(obs, LinearKind::kUp, -1, false, s_.a.data(), n, d_model, nullptr);
    return;
  }
  if (observe_only && !is_moe_ && opt.stop_after == StopAfter::kNone) {
    // mlp_forward up to the down_proj input (its output is not needed).
    const int64_t dff = mlp_.gate.n_out;
    observe(obs, LinearKind::kGate, -1, false, s_.a.data(), n, mlp_.gate.n_in, nullptr);
    observe(obs, LinearKind::kUp, -1, false, s_.a.data(), n, mlp_.up.n_in, nullptr);
    apply_linear(mlp_.gate, s_.a.data(), n, s_.g.data(), rb);
    apply_linear(mlp_.up, s_.a.data(), n, s_.u.data(), rb);
    swiglu(ctx_, s_.g.data(), s_.u.data(), s_.g.data(), n * dff, rb);
    observe(obs, LinearKind::kDown, -1, false, s_.g.data(), n, dff, nullptr);
    return;
  }
  ffn_block(s_.a.data(), n, opt, obs, s_.o_buf.data());
  add(ctx_, x, s_.o_buf.data(), x, n * d_model, rb);
}

CudaDecoderLayer::Lin& CudaDecoderLayer::linear_of(const LinearId& id) {
  ANGELSLIM_CHECK(id.layer == index_, InvalidInput, "CudaDecoderLayer {}: linear {} belongs to another layer", index_,
                  id.full_name());
  switch (id.kind) {
    case LinearKind::kQ:
      return q_;
    case LinearKind::kK:
      return k_;
    case LinearKind::kV:
      return v_;
    case LinearKind::kO:
      return o_;
    default:
      break;
  }
  DevMlp* m = &mlp_;
  if (id.expert >= 0) {
    ANGELSLIM_CHECK(is_moe_ && id.expert < static_cast<int64_t>(experts_.size()), InvalidInput,
                    "CudaDecoderLayer {}: no linear {}", index_, id.full_name());
    m = &experts_[static_cast<std::size_t>(id.expert)];
  } else {
    ANGELSLIM_CHECK(!is_moe_ || has_shared_, InvalidInput, "CudaDecoderLayer {}: no linear {}", index_, id.full_name());
  }
  return id.kind == LinearKind::kGate ? m->gate : id.kind == LinearKind::kUp ? m->up : m->down;
}

float* CudaDecoderLayer::weights_f32(const LinearId& id) {
  ANGELSLIM_CHECK(weights_ == DeviceWeights::kF32, InvalidInput,
                  "CudaDecoderLayer {}: {} has no fp32 device weights (the layer was uploaded in bf16)", index_,
                  id.full_name());
  return linear_of(id).w32.data();
}

DeviceWeightsView CudaDecoderLayer::exact_weights(const LinearId& id) {
  const Lin& d = linear_of(id);
  DeviceWeightsView e;
  e.rows = d.n_out;
  e.cols = d.n_in;
  if (weights_ == DeviceWeights::kF32)
    e.f32 = d.w32.data();
  else if ((weights_ == DeviceWeights::kBF16Exact && d.w16_lo.empty() && d.w16_lo2.empty()) ||
           (weights_ == DeviceWeights::kBF16 && n_rounded_ == 0))
    e.bf16 = d.w16.data();  // a single term: every element needed no second one (split_bf16_terms), so it is exact
  return e;
}

void CudaDecoderLayer::update_linear(const LinearId& id, const Linear& lin) {
  (void)update_linear_from(id, lin, nullptr);
}

bool CudaDecoderLayer::update_linear_from_device(const LinearId& id, const Linear& lin, const float* w) {
  if (weights_ == DeviceWeights::kBF16) return false;
  return update_linear_from(id, lin, w);
}

bool CudaDecoderLayer::update_linear_from(const LinearId& id, const Linear& lin, const float* device_w) {
  Lin& d = linear_of(id);
  ANGELSLIM_CHECK(lin.n_out == d.n_out && lin.n_in == d.n_in, InvalidInput,
                  "CudaDecoderLayer {}: {} is [{}, {}], the update [{}, {}]", index_, id.full_name(), d.n_out, d.n_in,
                  lin.n_out, lin.n_in);
  const std::size_t old_bytes = d.w32.size() * sizeof(float) + d.bias.size() * sizeof(float) +
                                (d.w16.size() + d.w16_lo.size() + d.w16_lo2.size()) * sizeof(uint16_t) +
                                d.input_scale.size() * sizeof(float);
  n_terms_[0] -= !d.w16_lo.empty();
  n_terms_[1] -= !d.w16_lo2.empty();
  const std::string name = id.rel_name();
  // The new weights take the old buffers where the sizes match; the old weights' last readers are earlier work on
  // this stream, which runs before the writes into them.
  Lin old = std::move(d);
  recycle(old);
  d = upload_linear(lin, name.c_str(), device_w);
  free_recycled();
  weight_bytes_ -= old_bytes;
  return true;
}

}  // namespace angelslim::cuda
