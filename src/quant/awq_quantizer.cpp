// AWQ layer quantizer (SPEC 4.5, 5.4; building blocks in awq.cpp, clip search in awq_clip.cpp). Per layer: one
// statistics pass, an alpha search per scaling group on the unscaled FP weights, folding in SPEC order, optional
// clip search, quantization on the export grid. Memory: one extra [T, d_model] FP32 copy (the MLP input of every
// token, needed for routed-expert clip inputs) plus the Gram matrices of the single-linear groups.
#include "angelslim/quant/awq_quantizer.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>

#include "angelslim/backend/cuda_awq.h"
#include "angelslim/core/error.h"
#include "angelslim/ops/cpu_ops.h"
#include "angelslim/quant/awq.h"
#include "angelslim/quant/awq_apply.h"
#include "angelslim/quant/awq_clip.h"
#include "angelslim/quant/gptq.h"
#include "angelslim/quant/pack.h"

namespace angelslim {

using nlohmann::json;
using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
std::size_t sz(int64_t v) { return static_cast<std::size_t>(v); }

void add_abs(std::vector<double>& sum, const float* x, int64_t n, int64_t k) {
  if (sum.empty()) sum.assign(sz(k), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < k; ++c) sum[sz(c)] += std::fabs(x[t * k + c]);
}

// Accumulates X^T X (upper triangle) into g [k, k].
void add_gram(std::vector<float>& g, const float* x, int64_t n, int64_t k) {
  if (g.empty()) g.assign(sz(k * k), 0.0f);
  if (n == 0) return;
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(k), static_cast<int>(n), 1.0f, x,
              static_cast<int>(k), 1.0f, g.data(), static_cast<int>(k));
}

void symmetrize(std::vector<float>& g, int64_t k) {
  for (int64_t a = 0; a < k; ++a)
    for (int64_t b = a + 1; b < k; ++b) g[sz(b * k + a)] = g[sz(a * k + b)];
}

std::vector<float> mean_of(const std::vector<double>& sum, int64_t n, int64_t k) {
  std::vector<float> m(sz(k), 0.0f);
  if (sum.empty() || n == 0) return m;
  for (int64_t c = 0; c < k; ++c) m[sz(c)] = static_cast<float>(sum[sz(c)] / static_cast<double>(n));
  return m;
}

// Statistics of one layer from one forward pass with the FP weights (SPEC 4.5.1): mean |x| per input channel,
// Gram matrices of the single-linear groups, the MLP / MoE input of every token, routed token lists, and the
// o_proj input rows the clip search uses (every clip_stride-th token).
class StatsObserver : public LinearObserver {
 public:
  struct DownStat {
    std::vector<double> sum_abs;  // [K]
    std::vector<float> gram;      // [K, K] upper triangle until finish()
    int64_t n = 0, k = 0;
  };
  // sub_row: [T] row of each token in a_sub (the attention-search samples), -1 for tokens outside them;
  // clip_rows: capture the q/o inputs of every clip_stride-th token (mse_range).
  // qkv_gram: also the Gram matrix of the q/k/v input over every token (GPTQ rounding).
  StatsObserver(int64_t n_tokens, int64_t d_model, int64_t n_experts, std::vector<int64_t> sub_row, int64_t n_sub,
                int64_t clip_stride, bool o_gram, bool clip_rows, bool qkv_gram = false)
      : h_(d_model), clip_stride_(clip_stride), want_o_gram_(o_gram), want_clip_rows_(clip_rows),
        want_qkv_gram_(qkv_gram), sub_row_(std::move(sub_row)) {
    m_all.assign(sz(n_tokens * d_model), 0.0f);
    a_sub.assign(sz(n_sub * d_model), 0.0f);
    m_seen.assign(sz(n_tokens), 0);
    expert_tokens.resize(sz(n_experts));
  }
  void observe(const LinearId& id, const float* x, int64_t n, int64_t k, const int64_t* idx) override {
    for (int64_t i = 0; i < n * k; ++i)
      if (!std::isfinite(x[i]))
        throw InvalidInput(fmt::format("non-finite activation entering {} during AWQ calibration", id.full_name()));
    switch (id.kind) {
      case LinearKind::kQ:
        ANGELSLIM_ASSERT(k == h_);
        add_abs(q_sum, x, n, k);
        if (want_qkv_gram_) add_gram(qkv_gram, x, n, k);
        q_n += n;
        for (int64_t i = 0; i < n; ++i) {
          if (const int64_t r = sub_row_[sz(idx[i])]; r >= 0) std::copy(x + i * k, x + (i + 1) * k, a_sub.data() + r * k);
          if (want_clip_rows_ && idx[i] % clip_stride_ == 0) a_clip.insert(a_clip.end(), x + i * k, x + (i + 1) * k);
        }
        break;
      case LinearKind::kO:
        o_k = k;
        if (want_o_gram_) {
          add_abs(o_sum, x, n, k);
          add_gram(o_gram, x, n, k);
        }
        o_n += n;
        if (want_clip_rows_)
          for (int64_t i = 0; i < n; ++i)
            if (idx[i] % clip_stride_ == 0) o_rows.insert(o_rows.end(), x + i * k, x + (i + 1) * k);
        break;
      case LinearKind::kGate:
        ANGELSLIM_ASSERT(k == h_);
        for (int64_t i = 0; i < n; ++i) {
          std::copy(x + i * k, x + (i + 1) * k, m_all.data() + idx[i] * h_);
          m_seen[sz(idx[i])] = 1;
        }
        if (id.expert >= 0) {
          auto& v = expert_tokens[sz(id.expert)];
          v.insert(v.end(), idx, idx + n);
        }
        break;
      case LinearKind::kDown: {
        DownStat& d = down[id.expert];
        d.k = k;
        add_abs(d.sum_abs, x, n, k);
        add_gram(d.gram, x, n, k);
        d.n += n;
        break;
      }
      default: break;
    }
  }
  void finish() {
    if (!o_gram.empty()) symmetrize(o_gram, o_k);
    if (!qkv_gram.empty()) symmetrize(qkv_gram, h_);
    for (auto& [e, d] : down)
      if (!d.gram.empty()) symmetrize(d.gram, d.k);
    for (std::size_t t = 0; t < m_seen.size(); ++t)
      if (!m_seen[t]) throw Internal(fmt::format("AWQ: token {} never reached the MLP of the layer", t));
  }

  std::vector<double> q_sum, o_sum;
  int64_t q_n = 0, o_n = 0, o_k = 0;
  std::vector<float> o_gram;                     // [qd, qd] (MHA, or GPTQ rounding)
  std::vector<float> qkv_gram;                   // [d_model, d_model] (GPTQ rounding only)
  std::vector<float> o_rows;                     // [n_clip, qd] o_proj inputs of the clip tokens
  std::vector<float> a_sub;                      // [n_sub, d_model] input_layernorm output, attention-search samples
  std::vector<float> a_clip;                     // [n_clip, d_model] input_layernorm output of the clip tokens
  std::vector<float> m_all;                      // [T, d_model]: post_attention_layernorm output of every token
  std::vector<std::vector<int64_t>> expert_tokens;
  std::map<int64_t, DownStat> down;              // key: expert index, -1 = dense MLP / shared expert

 private:
  int64_t h_, clip_stride_;
  bool want_o_gram_, want_clip_rows_, want_qkv_gram_;
  std::vector<int64_t> sub_row_;
  std::vector<uint8_t> m_seen;
};

// Down-projection inputs SiLU(gate x) * up x for rows x [n, d_model], rounded like the forward pass.
std::vector<float> down_inputs(const Mlp& m, const float* x, int64_t n, bool rb) {
  const int64_t dff = m.gate.n_out;
  std::vector<float> g(sz(n * dff)), u(g.size());
  cpu::linear(x, n, m.gate.n_in, m.gate.w.data(), dff, m.gate.bias.empty() ? nullptr : m.gate.bias.data(), g.data());
  cpu::linear(x, n, m.up.n_in, m.up.w.data(), dff, m.up.bias.empty() ? nullptr : m.up.bias.data(), u.data());
  if (rb) {
    cpu::round_bf16_inplace(g.data(), n * dff);
    cpu::round_bf16_inplace(u.data(), n * dff);
  }
  cpu::swiglu(g.data(), u.data(), g.data(), n * dff, rb);
  return g;
}

double sq_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i] - b[i]) * (a[i] - b[i]);
  return s;
}

void put_i32(SafetensorsWriter& w, const std::string& name, std::vector<int64_t> shape, const std::vector<int32_t>& v) {
  w.add(name, DType::kI32, std::move(shape),
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4));
}

void put_half(SafetensorsWriter& w, const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v,
              bool bf16) {
  w.add(name, bf16 ? DType::kBF16 : DType::kF16, std::move(shape),
        encode_float_dtype(v, bf16 ? DType::kBF16 : DType::kF16));
}

// One scaling group's search outcome.
struct GroupResult {
  std::string name;
  float alpha = 0.0f;
  std::vector<float> s;        // [K]; empty = skipped (s = 1)
  std::vector<double> losses;  // per alpha tried
  int64_t tokens = 0;          // statistic tokens
  int64_t search_tokens = 0;   // tokens of the loss
  std::string skipped;         // reason, when skipped
  json to_json() const {
    json j = {{"group", name}, {"tokens", tokens}};
    if (!skipped.empty()) {
      j["skipped"] = skipped;
      return j;
    }
    j["alpha"] = alpha;
    j["search_tokens"] = search_tokens;
    j["loss"] = losses;
    return j;
  }
};

}  // namespace

// The per-layer work, kept out of the header.
struct AwqQuantizer::Impl {
  AwqQuantizer& q;
  DecoderLayer& L;
  CalibActivations& acts;
  json& report;
  const ModelConfig& cfg;
  ForwardOptions fopt, search_opt;
  int64_t T, H;
  std::string prefix;
  std::vector<float> inv_freq;
  // The attention search runs on whole samples (causal attention): every ceil(T/budget)-th sample.
  std::vector<int64_t> sub_begin;           // first row of each chosen sample in StatsObserver::a_sub
  std::vector<int64_t> sub_row;             // [T] row in a_sub of each calibration token, -1 if not chosen
  int64_t sub_tokens = 0;

  Impl(AwqQuantizer& quant, DecoderLayer& layer, CalibActivations& a, json& rep)
      : q(quant), L(layer), acts(a), report(rep), cfg(quant.cfg_), T(a.n_tokens()), H(quant.cfg_.d_model),
        prefix("model.layers." + std::to_string(layer.index) + "."), inv_freq(rope_inv_freq(quant.cfg_)) {
    fopt.round_bf16 = cfg.torch_dtype != "float32";
    search_opt.round_bf16 = false;  // losses compare FP32 evaluations of the sub-block (SPEC 4.5.2)
    const int64_t budget = q.opt_.search_tokens;
    const int64_t stride = budget > 0 ? std::max<int64_t>(1, ceil_div(T, budget)) : 1;
    sub_row.assign(sz(T), -1);
    for (int64_t smp = 0; smp < a.n_samples(); smp += stride) {
      sub_begin.push_back(sub_tokens);
      for (int64_t i = 0; i < a.sample_len(smp); ++i) sub_row[sz(a.sample_begin(smp) + i)] = sub_tokens + i;
      sub_tokens += a.sample_len(smp);
    }
  }

  bool ignored(const LinearId& id) const { return q.ignore_.matches(id.full_name()); }
  DType source_dtype(const std::string& name) const { return q.source_->get(name).dtype; }

  std::vector<float> fq(const Linear& lin, const std::vector<float>& s) const {
    return awq_fake_quantize(lin.w, static_cast<int>(lin.n_out), static_cast<int>(lin.n_in), s, q.grid_);
  }

  // Tries every alpha (or the fixed one) and keeps the strict minimum of loss(s).
  GroupResult search(const std::string& name, const std::vector<float>& x_mean, int64_t tokens, int64_t search_tokens,
                     const std::function<double(const std::vector<float>&)>& loss) const {
    GroupResult r;
    r.name = name;
    r.tokens = tokens;
    r.search_tokens = search_tokens;
    if (q.opt_.fixed_alpha) {
      r.alpha = *q.opt_.fixed_alpha;
      r.s = awq_scales(x_mean, r.alpha);
      return r;
    }
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i < kAwqAlphaSteps; ++i) {
      const float a = awq_alpha(i);
      auto s = awq_scales(x_mean, a);
      const double l = loss(s);
      if (!std::isfinite(l))
        throw Internal(fmt::format("AWQ layer {} group {}: loss at alpha {} is not finite", L.index, name, a));
      r.losses.push_back(l);
      if (l < best) {
        best = l;
        r.alpha = a;
        r.s = std::move(s);
      }
    }
    return r;
  }

  // Single-linear group: loss = mean over tokens and outputs of (X (W' - W)^T)^2 from the Gram matrix.
  GroupResult search_gram(const std::string& name, const Linear& lin, const StatsObserver::DownStat& st) const {
    const auto x_mean = mean_of(st.sum_abs, st.n, st.k);
    const double denom = static_cast<double>(st.n) * static_cast<double>(lin.n_out);
    return search(name, x_mean, st.n, st.n, [&](const std::vector<float>& s) {
      const auto w_hat = fq(lin, s);
      return gram_error(lin.w, w_hat, static_cast<int>(lin.n_out), static_cast<int>(lin.n_in), st.gram) / denom;
    });
  }

  void run(const StatsObserver& obs, std::vector<GroupResult>& groups_out, json& linears);
};

AwqQuantizer::AwqQuantizer(const RunConfig& rc, const ModelConfig& cfg, AwqOptions options)
    : cfg_(cfg),
      opt_(options),
      bits_(rc.quant.bits),
      mse_range_(rc.quant.mse_range),
      awq_bf16_(rc.quant.awq_output_dtype == AwqOutputDtype::kBfloat16),
      min_token_fraction_(rc.quant.moe_min_token_fraction),
      gptq_rounding_(rc.quant.gptq_rounding),
      damp_(static_cast<float>(rc.quant.damp_percent)),
      ignore_(rc.quant.ignore_layers),
      source_(std::make_unique<TensorStore>(rc.model.model_path)) {
  ANGELSLIM_CHECK(bits_ == 4 || bits_ == 8, InvalidInput, "{}: AWQ supports 4 or 8 bits, got {}",
                  rc.config_path.string(), bits_);
  const bool sym = !rc.quant.zero_point || bits_ == 8;
  grid_.kind = sym ? GridKind::kAwqSym : GridKind::kAwqAsym;
  grid_.bits = bits_;
  grid_.group_size = rc.quant.weight == WeightGranularity::kPerChannel ? -1 : rc.quant.group_size;
  // 8 bits are written as GPTQ v1 with BF16 scales (SPEC 4.5.7); 4 bits carry F16 (or BF16) scales.
  grid_.scale_dtype = bits_ == 8 || awq_bf16_ ? ScaleDType::kBF16 : ScaleDType::kF16;
  // modules_to_not_convert: the ignored decoder linears by HF name, plus vLLM's fused names when a whole fused
  // set is ignored (vLLM skips a layer whose prefix contains an entry).
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    int qkv = 0, gu = 0, sgu = 0;
    for (const auto& id : layer_linear_ids(cfg, l)) {
      if (!ignore_.matches(id.full_name())) continue;
      not_convert_.push_back(id.full_name());
      if (id.kind == LinearKind::kQ || id.kind == LinearKind::kK || id.kind == LinearKind::kV) ++qkv;
      if (id.expert < 0 && (id.kind == LinearKind::kGate || id.kind == LinearKind::kUp)) ++(id.shared ? sgu : gu);
    }
    const std::string p = "model.layers." + std::to_string(l) + ".";
    if (qkv == 3) not_convert_.push_back(p + "self_attn.qkv_proj");
    if (gu == 2) not_convert_.push_back(p + "mlp.gate_up_proj");
    if (sgu == 2) not_convert_.push_back(p + "mlp.shared_mlp.gate_up_proj");
  }
  if (cfg.family == ModelFamily::kOcr) {
    not_convert_.push_back("visual");
    not_convert_.push_back("vit");
  }
}

AwqQuantizer::~AwqQuantizer() = default;

void AwqQuantizer::Impl::run(const StatsObserver& obs, std::vector<GroupResult>& groups, json& linears) {
  const bool rb = fopt.round_bf16;
  const auto t_search = Clock::now();
  const int64_t budget = q.opt_.search_tokens;
  const bool mha = cfg.n_heads == cfg.n_kv_heads;
  const int64_t qd = cfg.n_heads * cfg.head_dim;
  LinearId base{L.index, LinearKind::kQ, -1, false};
  auto lid = [&](LinearKind k, int64_t e = -1, bool shared = false) {
    LinearId id = base;
    id.kind = k;
    id.expert = e;
    id.shared = shared;
    return id;
  };

  // ---- attn-in: q, k, v after input_layernorm; M = the attention sub-block on whole samples.
  GroupResult attn_in;
  if (ignored(lid(LinearKind::kQ)) || ignored(lid(LinearKind::kK)) || ignored(lid(LinearKind::kV))) {
    attn_in = {"attn-in", 0.0f, {}, {}, T, 0, "q/k/v ignored"};
  } else {
    const int64_t n_sub = sub_tokens;
    const std::vector<float>& a = obs.a_sub;
    DecoderLayer att;
    att.index = L.index;
    att.q_norm = L.q_norm;
    att.k_norm = L.k_norm;
    att.q = L.q;
    att.k = L.k;
    att.v = L.v;
    att.o = L.o;
    // All chosen samples in one ragged batch: GEMMs over every token, causal attention per sample.
    std::vector<int64_t> offsets = sub_begin;
    offsets.push_back(n_sub);
    auto eval = [&](std::vector<float>& y) {
      y.resize(sz(n_sub * H));
      attention_block(cfg, att, inv_freq, a.data(), n_sub, 0, search_opt, nullptr, nullptr, y.data(), offsets);
    };
    std::vector<float> y_ref, y;
    if (!q.opt_.fixed_alpha) eval(y_ref);
    const double denom = static_cast<double>(n_sub) * static_cast<double>(H);
    attn_in = search("attn-in", mean_of(obs.q_sum, obs.q_n, H), obs.q_n, n_sub, [&](const std::vector<float>& s) {
      att.q.w = fq(L.q, s);
      att.k.w = fq(L.k, s);
      att.v.w = fq(L.v, s);
      eval(y);
      return sq_diff(y, y_ref) / denom;
    });
  }

  // ---- attn-out: v rows -> o, only for MHA (SPEC 4.5.3); o alone is evaluated, so its Gram gives the loss.
  GroupResult attn_out;
  if (!mha) {
    attn_out = {"attn-out", 0.0f, {}, {}, obs.o_n, 0, "grouped-query attention (n_heads != n_kv_heads)"};
  } else if (ignored(lid(LinearKind::kV)) || ignored(lid(LinearKind::kO))) {
    attn_out = {"attn-out", 0.0f, {}, {}, obs.o_n, 0, "v_proj or o_proj ignored"};
  } else {
    StatsObserver::DownStat st;
    st.sum_abs = obs.o_sum;
    st.gram = obs.o_gram;
    st.n = obs.o_n;
    st.k = qd;
    attn_out = search_gram("attn-out", L.o, st);
  }

  // ---- mlp-in / moe-in: gate, up (shared and every expert) after post_attention_layernorm; M = the MLP or the
  // whole MoE block (routing from the unscaled input: the router is not part of the search).
  std::vector<std::pair<LinearId, Linear*>> mlp_in_members;
  if (!L.is_moe) {
    mlp_in_members = {{lid(LinearKind::kGate), &L.mlp.gate}, {lid(LinearKind::kUp), &L.mlp.up}};
  } else {
    if (L.has_shared)
      mlp_in_members = {{lid(LinearKind::kGate, -1, true), &L.mlp.gate}, {lid(LinearKind::kUp, -1, true), &L.mlp.up}};
    for (std::size_t e = 0; e < L.experts.size(); ++e) {
      mlp_in_members.push_back({lid(LinearKind::kGate, static_cast<int64_t>(e)), &L.experts[e].gate});
      mlp_in_members.push_back({lid(LinearKind::kUp, static_cast<int64_t>(e)), &L.experts[e].up});
    }
  }
  const std::string in_name = L.is_moe ? "moe-in" : "mlp-in";
  GroupResult mlp_in;
  bool mlp_in_ignored = false;
  for (const auto& [id, lin] : mlp_in_members) mlp_in_ignored |= ignored(id);
  if (mlp_in_ignored) {
    mlp_in = {in_name, 0.0f, {}, {}, T, 0, "a gate/up projection of the group is ignored"};
  } else {
    std::vector<double> sum(sz(H), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < H; ++c) sum[sz(c)] += std::fabs(obs.m_all[sz(t * H + c)]);
    const int64_t stride = budget > 0 ? std::max<int64_t>(1, ceil_div(T, budget)) : 1;
    const int64_t n_sub = ceil_div(T, stride);
    std::vector<float> m(sz(n_sub * H));
    for (int64_t i = 0; i < n_sub; ++i)
      std::copy(obs.m_all.begin() + i * stride * H, obs.m_all.begin() + (i * stride + 1) * H, m.begin() + i * H);
    DecoderLayer ffn;
    ffn.index = L.index;
    ffn.is_moe = L.is_moe;
    ffn.mlp = L.mlp;
    ffn.has_shared = L.has_shared;
    ffn.router = L.router;
    ffn.top_k = L.top_k;
    ffn.experts = L.experts;
    // The copy's linears in the same order as mlp_in_members.
    std::vector<Linear*> copy_members;
    if (!L.is_moe || L.has_shared) copy_members = {&ffn.mlp.gate, &ffn.mlp.up};
    for (auto& ex : ffn.experts) {
      copy_members.push_back(&ex.gate);
      copy_members.push_back(&ex.up);
    }
    std::vector<float> y_ref(sz(n_sub * H)), y(sz(n_sub * H));
    if (!q.opt_.fixed_alpha) ffn_block(cfg, ffn, m.data(), n_sub, search_opt, nullptr, y_ref.data());
    const double denom = static_cast<double>(n_sub) * static_cast<double>(H);
    mlp_in = search(in_name, mean_of(sum, T, H), T, n_sub, [&](const std::vector<float>& s) {
      for (std::size_t i = 0; i < mlp_in_members.size(); ++i) copy_members[i]->w = fq(*mlp_in_members[i].second, s);
      ffn_block(cfg, ffn, m.data(), n_sub, search_opt, nullptr, y.data());
      return sq_diff(y, y_ref) / denom;
    });
  }

  // ---- mlp-out / shared-out / expert-out: up rows -> down, evaluated on down alone (Gram over all its tokens).
  const int64_t threshold =
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil(q.min_token_fraction_ * static_cast<double>(T))));
  struct OutGroup {
    GroupResult r;
    Mlp* mlp;
    LinearId down_id;
  };
  std::vector<OutGroup> outs;
  auto out_group = [&](const std::string& name, Mlp& mlp, int64_t e, bool shared) {
    const LinearId up_id = lid(LinearKind::kUp, e, shared), down_id = lid(LinearKind::kDown, e, shared);
    auto it = obs.down.find(e);
    const int64_t n = it == obs.down.end() ? 0 : it->second.n;
    OutGroup g{{name, 0.0f, {}, {}, n, 0, ""}, &mlp, down_id};
    if (ignored(up_id) || ignored(down_id)) g.r.skipped = "up_proj or down_proj ignored";
    else if (e >= 0 && n < threshold) g.r.skipped = fmt::format("starving expert ({} < {} tokens): s = 1", n, threshold);
    else g.r = search_gram(name, mlp.down, it->second);
    outs.push_back(std::move(g));
  };
  if (!L.is_moe) out_group("mlp-out", L.mlp, -1, false);
  if (L.is_moe && L.has_shared) out_group("shared-out", L.mlp, -1, true);
  for (std::size_t e = 0; e < L.experts.size(); ++e)
    out_group("expert-out." + std::to_string(e), L.experts[e], static_cast<int64_t>(e), false);
  const double search_s = since(t_search);

  // ---- Apply in the order of SPEC 4.5.3 / 4.5.4 (all searched on the unscaled weights above).
  AwqLayerScales chosen{attn_in.s, attn_out.s, mlp_in.s, mlp_in_members, {}};
  for (const auto& g : outs) {
    LinearId up_id = g.down_id;
    up_id.kind = LinearKind::kUp;
    chosen.mlp_out.push_back({g.mlp, up_id, g.r.s});
  }
  const AwqFolded folded = apply_awq_scales(
      L, cfg, chosen, [&](const std::string& n) { return source_dtype(n); }, q.modified_);
  const std::vector<float>&s_attn_in = folded.attn_in, &s_mlp_in = folded.mlp_in;

  // ---- Clip inputs (SPEC 4.5.6), gathered before any clipping from the scaled FP block: up to 1024 tokens,
  // every ceil(N/1024)-th of the linear's N input tokens.
  const auto t_clip = Clock::now();
  std::map<std::string, std::pair<std::vector<float>, int64_t>> clip_x;  // rel name -> ([n, K], n)
  if (q.mse_range_) {
    const int64_t stride = ceil_div(T, kAwqClipMaxTokens);
    const int64_t n_clip = ceil_div(T, stride);
    // v_proj: the cached input_layernorm output divided by the folded scale.
    std::vector<float> a = obs.a_clip;
    ANGELSLIM_ASSERT(static_cast<int64_t>(a.size()) == n_clip * H);
    if (!s_attn_in.empty())
      for (int64_t i = 0; i < n_clip; ++i)
        for (int64_t c = 0; c < H; ++c) a[sz(i * H + c)] /= s_attn_in[sz(c)];
    clip_x[lid(LinearKind::kV).rel_name()] = {std::move(a), n_clip};
    // o_proj: captured attention outputs, divided by the attn-out scale.
    std::vector<float> o = obs.o_rows;
    ANGELSLIM_ASSERT(static_cast<int64_t>(o.size()) == n_clip * qd);
    if (!attn_out.s.empty())
      for (int64_t i = 0; i < n_clip; ++i)
        for (int64_t c = 0; c < qd; ++c) o[sz(i * qd + c)] /= attn_out.s[sz(c)];
    clip_x[lid(LinearKind::kO).rel_name()] = {std::move(o), n_clip};
    // MLPs: the cached MLP input divided by the folded scale; down inputs from the scaled gate/up.
    auto mlp_clip = [&](Mlp& mlp, const std::vector<int64_t>& tokens, int64_t e, bool shared) {
      const int64_t n = static_cast<int64_t>(tokens.size());
      const int64_t st = std::max<int64_t>(1, ceil_div(n, kAwqClipMaxTokens));
      const int64_t nc = n == 0 ? 0 : ceil_div(n, st);
      std::vector<float> xm(sz(nc * H));
      for (int64_t i = 0; i < nc; ++i) {
        const int64_t t = tokens[sz(i * st)];
        for (int64_t c = 0; c < H; ++c)
          xm[sz(i * H + c)] = obs.m_all[sz(t * H + c)] / (s_mlp_in.empty() ? 1.0f : s_mlp_in[sz(c)]);
      }
      auto xd = down_inputs(mlp, xm.data(), nc, rb);
      clip_x[lid(LinearKind::kGate, e, shared).rel_name()] = {xm, nc};
      clip_x[lid(LinearKind::kUp, e, shared).rel_name()] = {std::move(xm), nc};
      clip_x[lid(LinearKind::kDown, e, shared).rel_name()] = {std::move(xd), nc};
    };
    if (!L.is_moe || L.has_shared) {
      std::vector<int64_t> all(sz(T));
      for (int64_t t = 0; t < T; ++t) all[sz(t)] = t;
      mlp_clip(L.mlp, all, -1, L.is_moe);
    }
    for (std::size_t e = 0; e < L.experts.size(); ++e)
      mlp_clip(L.experts[e], obs.expert_tokens[e], static_cast<int64_t>(e), false);
  }

  // ---- GPTQ rounding (ext, weight_rounding: gptq): each linear's Hessian from the FP inputs of the statistics
  // pass over every token it sees, carried into the scaled basis (x' = x / s: H' = S⁻¹ H S⁻¹), then GPTQ's error
  // feedback on the export grid in natural order (the AWQ layout has no g_idx). The scales, folds and clip are
  // AWQ's; only the codes (and each group's range, taken from the updated weights) change.
  std::map<int64_t, std::vector<float>> mlp_in_gram;  // expert (-1: dense MLP / shared expert) -> [H, H]
  auto mlp_gram = [&](int64_t e) -> const std::vector<float>& {
    auto it = mlp_in_gram.find(e);
    if (it != mlp_in_gram.end()) return it->second;
    std::vector<float> g;
    if (e < 0) {
      add_gram(g, obs.m_all.data(), T, H);
    } else {
      const auto& tok = obs.expert_tokens[sz(e)];
      std::vector<float> rows(tok.size() * sz(H));
      for (std::size_t i = 0; i < tok.size(); ++i)
        std::copy(obs.m_all.begin() + tok[i] * H, obs.m_all.begin() + (tok[i] + 1) * H, rows.begin() + i * sz(H));
      add_gram(g, rows.data(), static_cast<int64_t>(tok.size()), H);
    }
    symmetrize(g, H);
    return mlp_in_gram.emplace(e, std::move(g)).first->second;
  };
  auto gptq_round = [&](const LinearId& id, const Linear& lin, json& rec) -> QuantizedMatrix {
    const int rows = static_cast<int>(lin.n_out), cols = static_cast<int>(lin.n_in);
    const std::vector<float>* h = nullptr;
    const std::vector<float>* s = nullptr;
    int64_t tokens = T;
    switch (id.kind) {
      case LinearKind::kQ:
      case LinearKind::kK:
      case LinearKind::kV:
        h = &obs.qkv_gram;
        s = &s_attn_in;
        break;
      case LinearKind::kO:
        h = &obs.o_gram;
        s = &attn_out.s;
        break;
      case LinearKind::kGate:
      case LinearKind::kUp:
        tokens = id.expert >= 0 ? static_cast<int64_t>(obs.expert_tokens[sz(id.expert)].size()) : T;
        if (tokens >= threshold) h = &mlp_gram(id.expert);
        s = &s_mlp_in;
        break;
      case LinearKind::kDown:
        if (auto it = obs.down.find(id.expert); it != obs.down.end() && it->second.n >= threshold) {
          h = &it->second.gram;
          tokens = it->second.n;
        }
        for (const auto& o : outs)
          if (o.down_id.rel_name() == id.rel_name()) s = &o.r.s;
        break;
    }
    if (!h || h->empty() || tokens < threshold) {
      // A starving expert: round to nearest, as without the option.
      rec["rounding"] = "rtn_starving_expert";
      return rtn_quantize(lin.w, rows, cols, q.grid_);
    }
    ANGELSLIM_ASSERT(h->size() == sz(int64_t(cols) * cols));
    std::vector<float> hs = *h;
    if (s && !s->empty()) {
      ANGELSLIM_ASSERT(static_cast<int>(s->size()) == cols);
      for (int a = 0; a < cols; ++a)
        for (int b = 0; b < cols; ++b) hs[sz(int64_t(a) * cols + b)] /= (*s)[sz(a)] * (*s)[sz(b)];
    }
    GptqOptions o;
    o.bits = q.grid_.bits;
    o.group_size = q.grid_.group_size;
    o.grid = q.grid_.kind;
    o.order = GptqOrder::kNatural;
    o.damp_percent = q.damp_;
    o.scale_dtype = q.grid_.scale_dtype;
    o.name = id.full_name();
    GptqResult r = gptq_quantize(lin.w, rows, cols, hs, o);
    rec["rounding"] = r.fallback ? "rtn_cholesky_fallback" : "gptq";
    rec["damp"] = r.damp;
    rec["gptq_loss"] = r.loss;
    QuantizedMatrix m;
    m.rows = rows;
    m.cols = cols;
    m.group_size = r.group_size;
    m.n_groups = r.n_groups;
    m.codes = std::move(r.codes);
    m.scales = std::move(r.scales);
    m.zeros = std::move(r.zeros);
    m.dequant = std::move(r.w_hat);
    return m;
  };

  // ---- Per linear: clip (all but q/k), quantize on the export grid, report.
  auto alpha_of = [&](const LinearId& id) -> json {
    const GroupResult* g = nullptr;
    switch (id.kind) {
      case LinearKind::kQ:
      case LinearKind::kK:
      case LinearKind::kV: g = &attn_in; break;
      case LinearKind::kO: g = &attn_out; break;
      case LinearKind::kGate:
      case LinearKind::kUp: g = &mlp_in; break;
      case LinearKind::kDown:
        for (const auto& o : outs)
          if (o.down_id.rel_name() == id.rel_name()) g = &o.r;
        break;
    }
    if (!g || g->s.empty()) return nullptr;
    return g->alpha;
  };
  for (auto& [id, lin] : layer_linears(L)) {
    if (ignored(id)) continue;
    const auto t0 = Clock::now();
    const int rows = static_cast<int>(lin->n_out), cols = static_cast<int>(lin->n_in);
    const std::vector<float> w_scaled = lin->w;
    json rec = {{"name", id.rel_name()}, {"method", "awq"}, {"alpha", alpha_of(id)}, {"clip_ratio", nullptr}};
    int64_t tokens = T;
    if (id.expert >= 0) tokens = static_cast<int64_t>(obs.expert_tokens[sz(id.expert)].size());
    rec["tokens"] = tokens;
    if (id.expert >= 0 && tokens < threshold) rec["starving"] = true;
    auto cx = clip_x.find(id.rel_name());
    if (q.mse_range_ && id.kind != LinearKind::kQ && id.kind != LinearKind::kK && cx != clip_x.end() &&
        cx->second.second > 0) {
      // x holds at most 1024 rows already, so awq_clip_search uses all of them.
      const auto m = awq_clip_search(lin->w, rows, cols, cx->second.first, cx->second.second, q.grid_);
      const int g = resolve_group_size(q.grid_.group_size, cols), ng = cols / g;
      double ratio = 0.0;
      for (int r = 0; r < rows; ++r)
        for (int gi = 0; gi < ng; ++gi) {
          float m0 = 0.0f;
          for (int j = 0; j < g; ++j) m0 = std::max(m0, std::fabs(w_scaled[sz(int64_t(r) * cols + gi * g + j)]));
          ratio += m0 > 0.0f ? m[sz(int64_t(r) * ng + gi)] / m0 : 1.0;
        }
      rec["clip_ratio"] = ratio / (static_cast<double>(rows) * ng);
      rec["clip_tokens"] = cx->second.second;
    }
    QuantizedMatrix qm =
        q.gptq_rounding_ ? gptq_round(id, *lin, rec) : rtn_quantize(lin->w, rows, cols, q.grid_);
    double num = 0, den = 0;
    for (std::size_t i = 0; i < w_scaled.size(); ++i) {
      num += static_cast<double>(qm.dequant[i] - w_scaled[i]) * (qm.dequant[i] - w_scaled[i]);
      den += static_cast<double>(w_scaled[i]) * w_scaled[i];
    }
    rec["err_rel"] = den > 0 ? std::sqrt(num / den) : 0.0;
    Out o;
    o.rows = rows;
    o.cols = cols;
    o.n_groups = qm.n_groups;
    o.codes = std::move(qm.codes);
    o.scales = std::move(qm.scales);
    o.zeros = std::move(qm.zeros);
    q.out_[id.full_name()] = std::move(o);
    rec["seconds"] = since(t0);
    linears.push_back(std::move(rec));
  }

  groups.push_back(std::move(attn_in));
  groups.push_back(std::move(attn_out));
  groups.push_back(std::move(mlp_in));
  for (auto& g : outs) groups.push_back(std::move(g.r));
  report["awq_seconds"] = {{"search", search_s}, {"clip_and_quantize", since(t_clip)}};
  if (L.is_moe) {
    json tok = json::array(), st = json::array();
    for (std::size_t e = 0; e < obs.expert_tokens.size(); ++e) {
      const auto n = static_cast<int64_t>(obs.expert_tokens[e].size());
      tok.push_back(n);
      if (n < threshold) st.push_back({{"expert", e}, {"tokens", n}, {"threshold", threshold}});
    }
    report["expert_tokens"] = tok;
    report["starving_experts"] = st;
  }
}

void AwqQuantizer::quantize_layer(DecoderLayer& layer, CalibActivations* acts, json& report) {
  ANGELSLIM_ASSERT(acts != nullptr);
  modified_.clear();  // the previous layer's tensors were written already
  const auto t0 = Clock::now();
  Impl impl(*this, layer, *acts, report);
  const int64_t T = acts->n_tokens();
  const int64_t clip_stride = ceil_div(T, kAwqClipMaxTokens);
  const bool mha = cfg_.n_heads == cfg_.n_kv_heads;
  StatsObserver obs(T, cfg_.d_model, layer.is_moe ? static_cast<int64_t>(layer.experts.size()) : 0, impl.sub_row,
                    impl.sub_tokens, clip_stride, mha || gptq_rounding_, mse_range_, gptq_rounding_);
  // Propagation (SPEC 4.5.1) uses the FP outputs of the scaled block. Scaling is an exact transform, so without
  // clipping those are the outputs of this statistics pass (up to BF16 rounding points): advance now and save a
  // forward pass. With clipping the block changes, and its outputs are recomputed after quantization below.
  if (mse_range_)
    acts->observe(layer, &obs, impl.fopt);
  else
    acts->advance(layer, &obs, impl.fopt);
  obs.finish();
  const double stats_s = since(t0);
  std::vector<GroupResult> groups;
  if (!report.contains("linears")) report["linears"] = json::array();
  impl.run(obs, groups, report["linears"]);
  json gj = json::array();
  for (const auto& g : groups) gj.push_back(g.to_json());
  report["awq_groups"] = std::move(gj);
  report["awq_seconds"]["stats"] = stats_s;
  if (mse_range_) {
    const auto t1 = Clock::now();
    acts->advance(layer, nullptr, impl.fopt);
    report["awq_seconds"]["advance"] = since(t1);
  }
}

void AwqQuantizer::quantize_layer_with(DecoderLayer& layer, CalibBackend* calib, json& report) {
  ANGELSLIM_ASSERT(calib != nullptr);
  if (CalibActivations* host = calib->host_activations()) return quantize_layer(layer, host, report);
  // GPU backend: the same search and decisions with the evaluations on the device (src/backend/cuda/cuda_awq.cpp).
  modified_.clear();
  AwqDeviceParams p;
  p.grid = grid_;
  p.mse_range = mse_range_;
  p.min_token_fraction = min_token_fraction_;
  p.search_tokens = opt_.search_tokens;
  p.fixed_alpha = opt_.fixed_alpha;
  p.ignored = [this](const LinearId& id) { return ignore_.matches(id.full_name()); };
  p.source_dtype = [this](const std::string& name) { return source_->get(name).dtype; };
  AwqDeviceOutput o;
  cuda_awq_quantize_layer(cfg_, p, layer, *calib, report, o);
  for (auto& [name, l] : o.linears) out_[name] = Out{l.rows, l.cols, l.n_groups, std::move(l.codes),
                                                     std::move(l.scales), std::move(l.zeros)};
  modified_ = std::move(o.modified);
}

void AwqQuantizer::write_module(const std::string& module, SafetensorsWriter& w) {
  auto it = out_.find(module);
  ANGELSLIM_ASSERT(it != out_.end());
  const Out& o = it->second;
  const int64_t R = o.rows, K = o.cols, G = o.n_groups;
  if (bits_ == 4) {
    // AWQ GEMM (SPEC 5.4): qweight [K, N/8], qzeros [K/g, N/8] raw zeros, scales [K/g, N].
    put_i32(w, module + ".qweight", {K, R / 8}, pack_awq_qweight(o.codes, o.rows, o.cols));
    put_i32(w, module + ".qzeros", {G, R / 8}, pack_awq_qzeros(o.zeros, o.rows, o.n_groups));
    put_half(w, module + ".scales", {G, R}, transpose_scales(o.scales, o.rows, o.n_groups), awq_bf16_);
  } else {
    // 8 bits: GPTQ v1 (SPEC 5.3.2), symmetric, trivial g_idx, BF16 scales.
    const int64_t P = 32 / bits_;
    put_i32(w, module + ".qweight", {K / P, R}, pack_gptq_qweight(o.codes, o.rows, o.cols, bits_));
    put_i32(w, module + ".qzeros", {G, R / P}, pack_gptq_qzeros(o.zeros, o.rows, o.n_groups, bits_));
    put_half(w, module + ".scales", {G, R}, transpose_scales(o.scales, o.rows, o.n_groups), true);
    std::vector<int32_t> g_idx(static_cast<std::size_t>(K));
    for (int64_t k = 0; k < K; ++k) g_idx[static_cast<std::size_t>(k)] = static_cast<int32_t>(k / (K / G));
    put_i32(w, module + ".g_idx", {K}, g_idx);
  }
  out_.erase(it);
}

const std::vector<uint8_t>* AwqQuantizer::modified_tensor(const std::string& name) const {
  auto it = modified_.find(name);
  return it == modified_.end() ? nullptr : &it->second;
}

ordered_json AwqQuantizer::quantization_config() const {
  ordered_json q;
  if (bits_ == 4) {
    q["quant_method"] = "awq";
    q["zero_point"] = true;  // symmetric runs store Z = 8 (SPEC 5.4)
    q["group_size"] = grid_.group_size;
    q["bits"] = bits_;
    q["version"] = "gemm";
    q["modules_to_not_convert"] = not_convert_.empty() ? ordered_json(nullptr) : ordered_json(not_convert_);
    return q;
  }
  q["bits"] = bits_;
  q["group_size"] = grid_.group_size;
  q["desc_act"] = false;
  q["sym"] = true;
  q["static_groups"] = false;
  q["true_sequential"] = true;
  q["damp_percent"] = 0.01;
  q["lm_head"] = false;
  q["quant_method"] = "gptq";
  q["checkpoint_format"] = "gptq";
  return q;
}

void AwqQuantizer::edit_config(ordered_json& config) const {
  if (bits_ != 4) return;  // INT8 keeps the dtype key (SPEC 4.5.7)
  const char* key = config.contains("dtype") && !config.contains("torch_dtype") ? "dtype" : "torch_dtype";
  config[key] = awq_bf16_ ? "bfloat16" : "float16";
}

}  // namespace angelslim
