// Hunyuan dense/MoE decoder forward pass on the CPU reference ops (SPEC 3.2-3.7).
#include "angelslim/model/hunyuan.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"
#include "angelslim/model/hunyuan_vl.h"
#include "angelslim/model/weight_loader.h"
#include "angelslim/ops/cpu_ops.h"

namespace angelslim {

const char* linear_kind_name(LinearKind k) {
  switch (k) {
    case LinearKind::kQ: return "q_proj";
    case LinearKind::kK: return "k_proj";
    case LinearKind::kV: return "v_proj";
    case LinearKind::kO: return "o_proj";
    case LinearKind::kGate: return "gate_proj";
    case LinearKind::kUp: return "up_proj";
    case LinearKind::kDown: return "down_proj";
  }
  return "?";
}

std::string LinearId::rel_name() const {
  switch (kind) {
    case LinearKind::kQ:
    case LinearKind::kK:
    case LinearKind::kV:
    case LinearKind::kO: return std::string("self_attn.") + linear_kind_name(kind);
    default: break;
  }
  if (expert >= 0) return "mlp.experts." + std::to_string(expert) + "." + linear_kind_name(kind);
  if (shared) return std::string("mlp.shared_mlp.") + linear_kind_name(kind);
  return std::string("mlp.") + linear_kind_name(kind);
}

std::vector<LinearId> layer_linear_ids(const ModelConfig& cfg, int64_t l) {
  std::vector<LinearId> v;
  for (auto k : {LinearKind::kQ, LinearKind::kK, LinearKind::kV, LinearKind::kO}) v.push_back({l, k, -1, false});
  auto mlp = [&](int64_t e, bool shared) {
    for (auto k : {LinearKind::kGate, LinearKind::kUp, LinearKind::kDown}) v.push_back({l, k, e, shared});
  };
  if (cfg.family != ModelFamily::kMoE) {
    mlp(-1, false);
    return v;
  }
  if (cfg.n_shared_experts.at(static_cast<std::size_t>(l)) > 0) mlp(-1, true);
  for (int64_t e = 0; e < cfg.n_experts; ++e) mlp(e, false);
  return v;
}

std::vector<float> rope_inv_freq(const ModelConfig& cfg) {
  const float base = cfg.rope_kind == "default" ? static_cast<float>(cfg.rope_theta) : cfg.rope_base();
  const int64_t half = cfg.head_dim / 2;
  std::vector<float> inv(static_cast<std::size_t>(half));
  for (int64_t j = 0; j < half; ++j) {
    const float e = static_cast<float>(2 * j) / static_cast<float>(cfg.head_dim);
    inv[static_cast<std::size_t>(j)] = 1.0f / std::pow(base, e);
  }
  return inv;
}

void apply_linear(const Linear& lin, const float* x, int64_t n, float* y, bool rb, std::vector<float>& scratch) {
  const float* in = x;
  if (lin.act != ActQuant::kNone && n > 0) {
    float s = lin.input_scale;
    if (lin.act == ActQuant::kFp8Dynamic) {
      float amax = 0.0f;
      for (int64_t i = 0; i < n * lin.n_in; ++i) amax = std::max(amax, std::fabs(x[i]));
      s = std::max(amax, 1e-12f) / kFp8E4M3Max;
    }
    scratch.resize(static_cast<std::size_t>(n * lin.n_in));
    for (int64_t i = 0; i < n * lin.n_in; ++i) scratch[i] = round_fp8e4m3(x[i] / s) * s;
    in = scratch.data();
  }
  cpu::linear(in, n, lin.n_in, lin.w.data(), lin.n_out, lin.bias.empty() ? nullptr : lin.bias.data(), y);
  if (rb) cpu::round_bf16_inplace(y, n * lin.n_out);
}

namespace {

void observe(LinearObserver* obs, int64_t layer, LinearKind kind, int64_t expert, bool shared, const float* x,
             int64_t n, int64_t n_in, const int64_t* idx = nullptr) {
  if (!obs) return;
  LinearId id{layer, kind, expert, shared};
  obs->observe(id, x, n, n_in, idx);
}

// SwiGLU MLP on m [n, d_model] -> out [n, d_model]; observers see gate/up input and down input.
void mlp_forward(const Mlp& mlp, const float* m, int64_t n, float* out, bool rb, LinearObserver* obs, int64_t layer,
                 int64_t expert, bool shared, const int64_t* idx) {
  const int64_t dff = mlp.gate.n_out;
  std::vector<float> g(static_cast<std::size_t>(n * dff)), u(g.size()), scratch;
  observe(obs, layer, LinearKind::kGate, expert, shared, m, n, mlp.gate.n_in, idx);
  observe(obs, layer, LinearKind::kUp, expert, shared, m, n, mlp.up.n_in, idx);
  apply_linear(mlp.gate, m, n, g.data(), rb, scratch);
  apply_linear(mlp.up, m, n, u.data(), rb, scratch);
  cpu::swiglu(g.data(), u.data(), g.data(), n * dff, rb);
  observe(obs, layer, LinearKind::kDown, expert, shared, g.data(), n, dff, idx);
  apply_linear(mlp.down, g.data(), n, out, rb, scratch);
}

void moe_forward(const ModelConfig& cfg, const DecoderLayer& L, const float* m, int64_t n, float* out, bool rb,
                 LinearObserver* obs) {
  const int64_t H = cfg.d_model, E = cfg.n_experts, k = L.top_k;
  std::fill(out, out + n * H, 0.0f);
  // Router: fp32 logits, softmax over all experts, top-k (lower index wins ties), renormalise, bf16 weights.
  std::vector<float> logits(static_cast<std::size_t>(n * E));
  cpu::linear(m, n, H, L.router.data(), E, nullptr, logits.data());
  std::vector<int32_t> top(static_cast<std::size_t>(n * k));
  std::vector<float> wts(static_cast<std::size_t>(n * k));
  std::vector<int32_t> order(static_cast<std::size_t>(E));
  for (int64_t t = 0; t < n; ++t) {
    float* r = logits.data() + t * E;
    const float mx = *std::max_element(r, r + E);
    float sum = 0.0f;
    for (int64_t e = 0; e < E; ++e) {
      r[e] = std::exp(r[e] - mx);
      sum += r[e];
    }
    for (int64_t e = 0; e < E; ++e) r[e] /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return r[a] > r[b]; });
    float tsum = 0.0f;
    for (int64_t i = 0; i < k; ++i) tsum += r[order[static_cast<std::size_t>(i)]];
    for (int64_t i = 0; i < k; ++i) {
      const int32_t e = order[static_cast<std::size_t>(i)];
      top[static_cast<std::size_t>(t * k + i)] = e;
      const float w = r[e] / tsum;
      wts[static_cast<std::size_t>(t * k + i)] = rb ? round_bf16(w) : w;
    }
  }
  if (obs) obs->routed(L.index, top.data(), n, k);
  // Routed experts on their tokens; no capacity limit, no dropping (SPEC 3.6).
  std::vector<std::vector<int64_t>> tokens(static_cast<std::size_t>(E));
  std::vector<std::vector<float>> weights(static_cast<std::size_t>(E));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < k; ++i) {
      const int32_t e = top[static_cast<std::size_t>(t * k + i)];
      tokens[e].push_back(t);
      weights[e].push_back(wts[static_cast<std::size_t>(t * k + i)]);
    }
  std::vector<float> xin, y;
  for (int64_t e = 0; e < E; ++e) {
    const auto& tk = tokens[static_cast<std::size_t>(e)];
    const int64_t ne = static_cast<int64_t>(tk.size());
    if (ne == 0) continue;
    xin.resize(static_cast<std::size_t>(ne * H));
    for (int64_t i = 0; i < ne; ++i) std::copy(m + tk[i] * H, m + (tk[i] + 1) * H, xin.data() + i * H);
    y.resize(xin.size());
    mlp_forward(L.experts[static_cast<std::size_t>(e)], xin.data(), ne, y.data(), rb, obs, L.index, e, false,
                tk.data());
    for (int64_t i = 0; i < ne; ++i) {
      const float w = weights[static_cast<std::size_t>(e)][static_cast<std::size_t>(i)];
      float* o = out + tk[i] * H;
      const float* yi = y.data() + i * H;
      for (int64_t c = 0; c < H; ++c) o[c] += rb ? round_bf16(w * yi[c]) : w * yi[c];
    }
  }
  if (rb) cpu::round_bf16_inplace(out, n * H);
  if (L.has_shared) {
    std::vector<float> s(static_cast<std::size_t>(n * H));
    mlp_forward(L.mlp, m, n, s.data(), rb, obs, L.index, -1, true, nullptr);
    for (int64_t i = 0; i < n * H; ++i) out[i] = rb ? round_bf16(out[i] + s[i]) : out[i] + s[i];
  }
}

}  // namespace

void attention_block(const ModelConfig& cfg, const DecoderLayer& L, const std::vector<float>& inv_freq,
                     const float* a, int64_t n, int64_t pos0, const ForwardOptions& opt, LinearObserver* obs,
                     KvCache* cache, float* out, std::span<const int64_t> seq_offsets) {
  const int64_t single[2] = {0, n};
  const std::span<const int64_t> segs = seq_offsets.empty() ? std::span<const int64_t>(single) : seq_offsets;
  ANGELSLIM_ASSERT(segs.size() >= 2 && segs.front() == 0 && segs.back() == n);
  ANGELSLIM_ASSERT(segs.size() == 2 || (pos0 == 0 && cache == nullptr));
  const bool rb = opt.round_bf16;
  const int64_t H = cfg.d_model, D = cfg.head_dim, nH = cfg.n_heads, nKV = cfg.n_kv_heads;
  const int64_t qd = nH * D, kvd = nKV * D;
  std::vector<float> scratch;
  std::vector<float> q(static_cast<std::size_t>(n * qd)), kk(static_cast<std::size_t>(n * kvd)), vv(kk.size());
  observe(obs, L.index, LinearKind::kQ, -1, false, a, n, H);
  observe(obs, L.index, LinearKind::kK, -1, false, a, n, H);
  observe(obs, L.index, LinearKind::kV, -1, false, a, n, H);
  if (opt.stop_after == StopAfter::kQkvInput) return;
  apply_linear(L.q, a, n, q.data(), rb, scratch);
  apply_linear(L.k, a, n, kk.data(), rb, scratch);
  apply_linear(L.v, a, n, vv.data(), rb, scratch);
  // RoPE first, then QK-norm (SPEC 3.4).
  for (std::size_t sgi = 0; sgi + 1 < segs.size(); ++sgi) {
    const int64_t b = segs[sgi], len = segs[sgi + 1] - b;
    if (opt.xd_pos) {
      xdrope(q.data() + b * qd, len, nH, D, inv_freq.data(), opt.xd_pos + b * 4, cfg.xdrope_section, rb);
      xdrope(kk.data() + b * kvd, len, nKV, D, inv_freq.data(), opt.xd_pos + b * 4, cfg.xdrope_section, rb);
      continue;
    }
    cpu::rope(q.data() + b * qd, len, nH, D, inv_freq.data(), pos0, rb);
    cpu::rope(kk.data() + b * kvd, len, nKV, D, inv_freq.data(), pos0, rb);
  }
  if (cfg.use_qk_norm) {
    cpu::rms_norm(q.data(), n * nH, D, L.q_norm.data(), cfg.rms_norm_eps, q.data(), rb);
    cpu::rms_norm(kk.data(), n * nKV, D, L.k_norm.data(), cfg.rms_norm_eps, kk.data(), rb);
  }
  const float* kp = kk.data();
  const float* vp = vv.data();
  int64_t n_past = 0;
  if (cache) {
    n_past = cache->n;
    cache->k.insert(cache->k.end(), kk.begin(), kk.end());
    cache->v.insert(cache->v.end(), vv.begin(), vv.end());
    cache->n += n;
    kp = cache->k.data();
    vp = cache->v.data();
  }
  std::vector<float> attn(static_cast<std::size_t>(n * qd));
  if (segs.size() == 2) {
    cpu::attention(q.data(), kp, vp, n, n_past, nH, nKV, D, attn.data(), rb);
  } else {
    for (std::size_t sgi = 0; sgi + 1 < segs.size(); ++sgi) {
      const int64_t b = segs[sgi], len = segs[sgi + 1] - b;
      cpu::attention(q.data() + b * qd, kp + b * kvd, vp + b * kvd, len, 0, nH, nKV, D, attn.data() + b * qd, rb);
    }
  }
  observe(obs, L.index, LinearKind::kO, -1, false, attn.data(), n, qd);
  if (opt.stop_after == StopAfter::kOInput) return;
  apply_linear(L.o, attn.data(), n, out, rb, scratch);
}

void ffn_block(const ModelConfig& cfg, const DecoderLayer& L, const float* m, int64_t n, const ForwardOptions& opt,
               LinearObserver* obs, float* out) {
  if (L.is_moe)
    moe_forward(cfg, L, m, n, out, opt.round_bf16, obs);
  else
    mlp_forward(L.mlp, m, n, out, opt.round_bf16, obs, L.index, -1, false, nullptr);
}

void decoder_layer_forward(const ModelConfig& cfg, const DecoderLayer& L, const std::vector<float>& inv_freq, float* x,
                           int64_t n, int64_t pos0, const ForwardOptions& opt, LinearObserver* obs, KvCache* cache,
                           std::span<const int64_t> seq_offsets) {
  const bool rb = opt.round_bf16;
  const int64_t H = cfg.d_model;
  std::vector<float> a(static_cast<std::size_t>(n * H)), o(static_cast<std::size_t>(n * H));
  cpu::rms_norm(x, n, H, L.input_norm.data(), cfg.rms_norm_eps, a.data(), rb);
  attention_block(cfg, L, inv_freq, a.data(), n, pos0, opt, obs, cache, o.data(), seq_offsets);
  if (opt.stop_after == StopAfter::kQkvInput || opt.stop_after == StopAfter::kOInput) return;
  for (int64_t i = 0; i < n * H; ++i) x[i] = rb ? round_bf16(x[i] + o[i]) : x[i] + o[i];
  cpu::rms_norm(x, n, H, L.post_norm.data(), cfg.rms_norm_eps, a.data(), rb);
  if (opt.stop_after == StopAfter::kMlpInput && !L.is_moe) {
    // Dense MLP: its gate/up input is the norm output (routed experts need the router, so MoE runs on).
    observe(obs, L.index, LinearKind::kGate, -1, false, a.data(), n, H);
    observe(obs, L.index, LinearKind::kUp, -1, false, a.data(), n, H);
    return;
  }
  ffn_block(cfg, L, a.data(), n, opt, obs, o.data());
  for (int64_t i = 0; i < n * H; ++i) x[i] = rb ? round_bf16(x[i] + o[i]) : x[i] + o[i];
}

DecoderLayer load_decoder_layer(const TensorStore& store, const ModelConfig& cfg, int64_t li) {
  const WeightFormat fmt = WeightFormat::from_config(cfg);
  const std::string p = "model.layers." + std::to_string(li) + ".";
  DecoderLayer L;
  L.index = li;
  L.input_norm = load_vector(store, p + "input_layernorm.weight", cfg.d_model);
  L.post_norm = load_vector(store, p + "post_attention_layernorm.weight", cfg.d_model);
  if (cfg.use_qk_norm) {
    L.q_norm = load_vector(store, p + "self_attn.query_layernorm.weight", cfg.head_dim);
    L.k_norm = load_vector(store, p + "self_attn.key_layernorm.weight", cfg.head_dim);
  }
  const int64_t H = cfg.d_model, qd = cfg.n_heads * cfg.head_dim, kvd = cfg.n_kv_heads * cfg.head_dim;
  L.q = load_linear(store, fmt, p + "self_attn.q_proj", qd, H);
  L.k = load_linear(store, fmt, p + "self_attn.k_proj", kvd, H);
  L.v = load_linear(store, fmt, p + "self_attn.v_proj", kvd, H);
  L.o = load_linear(store, fmt, p + "self_attn.o_proj", H, qd);
  auto load_mlp = [&](const std::string& mp, int64_t dff) {
    Mlp m;
    m.gate = load_linear(store, fmt, mp + "gate_proj", dff, H);
    m.up = load_linear(store, fmt, mp + "up_proj", dff, H);
    m.down = load_linear(store, fmt, mp + "down_proj", H, dff);
    return m;
  };
  if (cfg.family == ModelFamily::kMoE) {
    const auto l = static_cast<std::size_t>(li);
    L.is_moe = true;
    L.top_k = cfg.moe_topk[l];
    L.router = load_matrix(store, p + "mlp.gate.wg.weight", cfg.n_experts, H);
    L.has_shared = cfg.n_shared_experts[l] > 0;
    if (L.has_shared) L.mlp = load_mlp(p + "mlp.shared_mlp.", cfg.shared_d_ff(li));
    for (int64_t e = 0; e < cfg.n_experts; ++e)
      L.experts.push_back(load_mlp(p + "mlp.experts." + std::to_string(e) + ".", cfg.moe_d_ff[l]));
  } else {
    L.mlp = load_mlp(p + "mlp.", cfg.d_ff);
  }
  return L;
}

// ---------------------------------------------------------------- whole model

HunyuanModel::HunyuanModel(const std::filesystem::path& dir, const ForwardOptions& opt)
    : cfg_(load_model_config(dir)), opt_(opt), store_(std::make_unique<TensorStore>(dir)) {
  embed_ = load_matrix(*store_, "model.embed_tokens.weight", cfg_.vocab_size, cfg_.d_model);
  if (!cfg_.tie_word_embeddings) lm_head_ = load_matrix(*store_, "lm_head.weight", cfg_.vocab_size, cfg_.d_model);
  final_norm_ = load_vector(*store_, "model.norm.weight", cfg_.d_model);
  inv_freq_ = rope_inv_freq(cfg_);
  for (int64_t l = 0; l < cfg_.n_layers; ++l) layers_.push_back(load_decoder_layer(*store_, cfg_, l));
}

void HunyuanModel::embed(const int32_t* ids, int64_t n, float* out) const {
  const int64_t H = cfg_.d_model;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = ids[t];
    if (id < 0 || id >= cfg_.vocab_size)
      throw InvalidInput(fmt::format("token id {} at position {} is outside the vocabulary [0, {})", id, t,
                                     cfg_.vocab_size));
    std::copy(embed_.data() + id * H, embed_.data() + (id + 1) * H, out + t * H);
  }
}

void HunyuanModel::head(const float* h, int64_t n, float* logits) const {
  std::vector<float> hn(static_cast<std::size_t>(n * cfg_.d_model));
  cpu::rms_norm(h, n, cfg_.d_model, final_norm_.data(), cfg_.rms_norm_eps, hn.data(), opt_.round_bf16);
  const auto& w = lm_head_.empty() ? embed_ : lm_head_;
  cpu::linear(hn.data(), n, cfg_.d_model, w.data(), cfg_.vocab_size, nullptr, logits);
}

std::vector<float> HunyuanModel::hidden(const int32_t* ids, int64_t n, std::span<const int64_t> seq_offsets) const {
  std::vector<float> x(static_cast<std::size_t>(n * cfg_.d_model));
  embed(ids, n, x.data());
  for (const auto& L : layers_) decoder_layer_forward(cfg_, L, inv_freq_, x.data(), n, 0, opt_, nullptr, nullptr, seq_offsets);
  return x;
}

std::vector<float> HunyuanModel::logits(const int32_t* ids, int64_t n) const {
  const auto x = hidden(ids, n);
  std::vector<float> out(static_cast<std::size_t>(n * cfg_.vocab_size));
  head(x.data(), n, out.data());
  return out;
}

std::vector<float> HunyuanModel::nll(const int32_t* ids, int64_t n) const { return nll_batch(ids, 1, n); }

std::vector<float> HunyuanModel::nll_batch(const int32_t* ids, int64_t count, int64_t len) const {
  if (len < 2 || count < 1) return {};
  std::vector<int64_t> offsets;
  for (int64_t i = 0; i <= count; ++i) offsets.push_back(i * len);
  const auto x = hidden(ids, count * len, count > 1 ? std::span<const int64_t>(offsets) : std::span<const int64_t>());
  // The head runs on row blocks so the [n, vocab] logits never exist at once (512 x 120818 fp32 = 247 MB).
  constexpr int64_t kRows = 64;
  const int64_t V = cfg_.vocab_size, H = cfg_.d_model;
  std::unique_ptr<float[]> lg(new float[static_cast<std::size_t>(kRows * V)]);
  std::vector<float> out(static_cast<std::size_t>(count * (len - 1)));
  for (int64_t s = 0; s < count; ++s)
    for (int64_t r0 = 0; r0 < len - 1; r0 += kRows) {
      const int64_t rows = std::min(kRows, len - 1 - r0);
      head(x.data() + (s * len + r0) * H, rows, lg.get());
      cpu::nll_rows(lg.get(), rows, V, ids + s * len + 1 + r0, out.data() + s * (len - 1) + r0);
    }
  return out;
}

std::vector<float> HunyuanModel::hidden_embeds(std::vector<float> x, int64_t n, const int32_t* xd_pos) const {
  ANGELSLIM_ASSERT(static_cast<int64_t>(x.size()) == n * cfg_.d_model);
  ForwardOptions opt = opt_;
  opt.xd_pos = xd_pos;
  for (const auto& L : layers_) decoder_layer_forward(cfg_, L, inv_freq_, x.data(), n, 0, opt);
  return x;
}

std::vector<float> HunyuanModel::step_embeds(Session& s, std::vector<float> x, int64_t n, const int32_t* xd_pos) const {
  ANGELSLIM_ASSERT(static_cast<int64_t>(x.size()) == n * cfg_.d_model);
  if (s.caches.empty()) s.caches.resize(layers_.size());
  ForwardOptions opt = opt_;
  opt.xd_pos = xd_pos;
  for (std::size_t l = 0; l < layers_.size(); ++l)
    decoder_layer_forward(cfg_, layers_[l], inv_freq_, x.data(), n, s.n, opt, nullptr, &s.caches[l]);
  s.n += n;
  std::vector<float> out(static_cast<std::size_t>(cfg_.vocab_size));
  head(x.data() + (n - 1) * cfg_.d_model, 1, out.data());
  return out;
}

std::vector<float> HunyuanModel::step(Session& s, const int32_t* ids, int64_t n) const {
  if (s.caches.empty()) s.caches.resize(layers_.size());
  std::vector<float> x(static_cast<std::size_t>(n * cfg_.d_model));
  embed(ids, n, x.data());
  for (std::size_t l = 0; l < layers_.size(); ++l)
    decoder_layer_forward(cfg_, layers_[l], inv_freq_, x.data(), n, s.n, opt_, nullptr, &s.caches[l]);
  s.n += n;
  std::vector<float> out(static_cast<std::size_t>(cfg_.vocab_size));
  head(x.data() + (n - 1) * cfg_.d_model, 1, out.data());
  return out;
}

}  // namespace angelslim
