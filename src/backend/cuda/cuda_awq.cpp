// AWQ on the GPU calibration backend; see include/angelslim/backend/cuda_awq.h. The structure is that of
// AwqQuantizer::Impl::run (src/quant/awq_quantizer.cpp): statistics, the search of each scaling group on the unscaled
// weights, folding in SPEC 4.5.3 / 4.5.4 order, clip inputs from the scaled FP block, clip and quantization per
// linear. What runs where: the statistics pass, every loss evaluation (fake quantization, the FP32 attention / MLP /
// MoE sub-block or the Gram-matrix error) and the clip search on the device; scales (awq_scales), folding and the
// final RTN quantization on the host with the CPU's functions, so those agree bit for bit.
#include "angelslim/backend/cuda_awq.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <limits>

#include "angelslim/backend/cuda_calib.h"
#include "angelslim/core/error.h"
#include "angelslim/quant/awq.h"
#include "angelslim/quant/awq_apply.h"
#include "angelslim/quant/awq_clip.h"
#include "angelslim/quant/layer_quantizer.h"
#include "backend/cuda/awq_kernels.h"
#include "backend/cuda/kernels.h"

namespace angelslim {

using nlohmann::json;

namespace cuda {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
std::size_t sz(int64_t v) { return static_cast<std::size_t>(v); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int grid_kind_code(GridKind k) {
  if (k == GridKind::kAwqAsym) return 0;
  if (k == GridKind::kAwqSym) return 1;
  throw Internal("cuda AWQ: the export grid must be AWQ-asym or AWQ-sym");
}
int scale_dtype_code(ScaleDType d) { return d == ScaleDType::kBF16 ? 0 : d == ScaleDType::kF16 ? 1 : 2; }

std::vector<float> mean_of(const std::vector<double>& sum, int64_t n, int64_t k) {
  std::vector<float> m(sz(k), 0.0f);
  if (sum.empty() || n == 0) return m;
  for (int64_t c = 0; c < k; ++c) m[sz(c)] = static_cast<float>(sum[sz(c)] / static_cast<double>(n));
  return m;
}

// Uploads host int64 rows into a growing device buffer (synchronously, so the buffer may be reused right after the
// consuming kernel is enqueued: the next upload is stream-ordered behind it).
const int64_t* upload_index(CudaContext& ctx, DeviceBuffer<int64_t>& buf, const std::vector<int64_t>& idx) {
  buf.ensure(std::max<std::size_t>(idx.size(), 1));
  upload(ctx, idx.data(), idx.size(), buf.data());
  return buf.data();
}

// Device statistics of AWQ's pass (the CPU StatsObserver's content): mean-|x| sums (FP64), Gram matrices of o (MHA)
// and of every down projection, the input_layernorm output of the search samples and of the clip tokens, the o_proj
// inputs of the clip tokens, the MLP input of every token, routed token lists.
class AwqStatsObserver : public CudaBatchObserver {
 public:
  struct Down {
    DeviceBuffer<double> sum;  // [k]
    DeviceBuffer<float> gram;  // [k, k], exactly symmetric
    int64_t n = 0, k = 0;
  };

  AwqStatsObserver(CudaContext& ctx, const ModelConfig& cfg, int64_t n_tokens, const std::vector<int64_t>& sub_row,
                   int64_t n_sub, int64_t clip_stride, bool o_gram, bool clip_rows, bool bf16_inputs, int64_t n_experts)
      : h_(cfg.d_model),
        qd_(cfg.n_heads * cfg.head_dim),
        clip_stride_(clip_stride),
        want_o_gram_(o_gram),
        want_clip_rows_(clip_rows),
        bf16_(bf16_inputs),
        sub_row_(sub_row) {
    const int64_t n_clip = ceil_div(n_tokens, clip_stride);
    q_sum.reset(sz(h_));
    zero(ctx, q_sum);
    a_sub.reset(sz(std::max<int64_t>(n_sub, 1) * h_));
    m_all.reset(sz(n_tokens * h_));
    if (clip_rows) {
      a_clip.reset(sz(n_clip * h_));
      o_rows.reset(sz(n_clip * qd_));
    }
    if (o_gram) {
      o_sum.reset(sz(qd_));
      zero(ctx, o_sum);
      o_gram_.reset(sz(qd_ * qd_));
      zero(ctx, o_gram_);
    }
    expert_tokens.resize(sz(n_experts));
  }

  void begin_batch(CudaContext&, int64_t first_token, int64_t n_tokens) override {
    t0_ = first_token;
    n_ = n_tokens;
  }

  void observe(CudaContext& ctx, const LinearId& id, const float* x, int64_t n, int64_t k,
               const int64_t* token_index) override {
    switch (id.kind) {
      case LinearKind::kQ: {
        ANGELSLIM_ASSERT(k == h_ && n == n_);
        abs_sum(ctx, x, n, k, q_sum.data());
        q_n += n;
        // Search samples: whole samples, so their rows of this batch go to one contiguous range of a_sub.
        std::vector<int64_t> rows;
        int64_t dst = -1;
        for (int64_t i = 0; i < n; ++i)
          if (const int64_t r = sub_row_[sz(t0_ + i)]; r >= 0) {
            if (dst < 0) dst = r;
            rows.push_back(i);
          }
        if (!rows.empty()) gather(ctx, x, h_, rows, a_sub.data() + dst * h_);
        if (want_clip_rows_) gather_clip(ctx, x, h_, a_clip.data());
        break;
      }
      case LinearKind::kO:
        o_k = k;
        if (want_o_gram_) {
          abs_sum(ctx, x, n, k, o_sum.data());
          gram(ctx, x, n, k, o_gram_.data());
        }
        o_n += n;
        if (want_clip_rows_) gather_clip(ctx, x, qd_, o_rows.data());
        break;
      case LinearKind::kGate: {
        ANGELSLIM_ASSERT(k == h_);
        float* dst = m_all.data() + t0_ * h_;
        if (!token_index) {
          ANGELSLIM_CUDA_CHECK(
              cudaMemcpyAsync(dst, x, sizeof(float) * sz(n * k), cudaMemcpyDeviceToDevice, ctx.stream()));
        } else {
          ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::scatter_rows(ctx.stream(), ctx.sm_count(), x, k, token_index, n, dst),
                                      "scatter_rows");
        }
        if (id.expert >= 0) {
          std::vector<int64_t> idx(sz(n));
          download(ctx, token_index, idx.size(), idx.data());
          auto& v = expert_tokens[sz(id.expert)];
          for (int64_t t : idx) v.push_back(t0_ + t);
        }
        break;
      }
      case LinearKind::kDown: {
        Down& d = down[id.expert];
        if (d.k == 0) {
          d.k = k;
          d.sum.reset(sz(k));
          zero(ctx, d.sum);
          d.gram.reset(sz(k * k));
          zero(ctx, d.gram);
        }
        abs_sum(ctx, x, n, k, d.sum.data());
        gram(ctx, x, n, k, d.gram.data());
        d.n += n;
        break;
      }
      default:
        break;
    }
  }

  DeviceBuffer<double> q_sum, o_sum;
  int64_t q_n = 0, o_n = 0, o_k = 0;
  DeviceBuffer<float> o_gram_;  // [qd, qd] (MHA)
  DeviceBuffer<float> a_sub;    // [n_sub, d_model]
  DeviceBuffer<float> a_clip;   // [n_clip, d_model]
  DeviceBuffer<float> o_rows;   // [n_clip, qd]
  DeviceBuffer<float> m_all;    // [T, d_model]
  std::vector<std::vector<int64_t>> expert_tokens;
  std::map<int64_t, Down> down;  // key: expert index, -1 = dense MLP / shared expert

 private:
  template <class T>
  static void zero(CudaContext& ctx, DeviceBuffer<T>& b) {
    if (!b.empty()) ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(b.data(), 0, b.size() * sizeof(T), ctx.stream()));
  }
  static void abs_sum(CudaContext& ctx, const float* x, int64_t n, int64_t k, double* sum) {
    ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::abs_sum_columns(ctx.stream(), x, n, k, sum), "abs_sum_columns");
  }
  void gram(CudaContext& ctx, const float* x, int64_t n, int64_t k, float* g) {
    if (n == 0) return;
    if (bf16_) {
      x16_.ensure(sz(n * k));
      f32_to_bf16(ctx, x, x16_.data(), n * k);
      hessian_accumulate_bf16(ctx, x16_.data(), n, k, g);
    } else {
      hessian_accumulate(ctx, x, n, k, 1.0f, g);
    }
  }
  void gather(CudaContext& ctx, const float* x, int64_t d, const std::vector<int64_t>& rows, float* out) {
    gather_rows(ctx, x, d, upload_index(ctx, idx_, rows), static_cast<int64_t>(rows.size()), out);
  }
  // The rows of every clip_stride-th token of the calibration set (global index), to out[t / clip_stride].
  void gather_clip(CudaContext& ctx, const float* x, int64_t d, float* out) {
    const int64_t first = ceil_div(t0_, clip_stride_) * clip_stride_;
    std::vector<int64_t> rows;
    for (int64_t t = first; t < t0_ + n_; t += clip_stride_) rows.push_back(t - t0_);
    if (!rows.empty()) gather(ctx, x, d, rows, out + (first / clip_stride_) * d);
  }

  int64_t h_, qd_, clip_stride_;
  bool want_o_gram_, want_clip_rows_, bf16_;
  const std::vector<int64_t>& sub_row_;
  int64_t t0_ = 0, n_ = 0;
  DeviceBuffer<int64_t> idx_;
  DeviceBuffer<uint16_t> x16_;
};

// One scaling group's search outcome (as the CPU's GroupResult).
struct GroupResult {
  std::string name;
  float alpha = 0.0f;
  std::vector<float> s;
  std::vector<double> losses;
  int64_t tokens = 0, search_tokens = 0;
  std::string skipped;
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

GroupResult skipped_group(const std::string& name, int64_t tokens, const std::string& why) {
  GroupResult g;
  g.name = name;
  g.tokens = tokens;
  g.skipped = why;
  return g;
}

class LayerAwq {
 public:
  LayerAwq(const ModelConfig& cfg, const AwqDeviceParams& p, DecoderLayer& layer, CudaCalibActivations& acts,
           json& report, AwqDeviceOutput& out)
      : cfg_(cfg),
        p_(p),
        L_(layer),
        acts_(acts),
        ctx_(acts.context()),
        report_(report),
        out_(out),
        T_(acts.n_tokens()),
        H_(cfg.d_model),
        prefix_("model.layers." + std::to_string(layer.index) + "."),
        inv_freq_(rope_inv_freq(cfg)),
        kind_(grid_kind_code(p.grid.kind)),
        sdt_(scale_dtype_code(p.grid.scale_dtype)) {
    fopt_.round_bf16 = cfg.torch_dtype != "float32";
    search_opt_.round_bf16 = false;
    const int64_t budget = p.search_tokens;
    const int64_t stride = budget > 0 ? std::max<int64_t>(1, ceil_div(T_, budget)) : 1;
    sub_row_.assign(sz(T_), -1);
    for (int64_t smp = 0; smp < acts.n_samples(); smp += stride) {
      sub_begin_.push_back(sub_tokens_);
      for (int64_t i = 0; i < acts.sample_len(smp); ++i) sub_row_[sz(acts.sample_begin(smp) + i)] = sub_tokens_ + i;
      sub_tokens_ += acts.sample_len(smp);
    }
    flag_.reset(1);
    ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(flag_.data(), 0, sizeof(int), ctx_.stream()));
  }

  void run();

 private:
  LinearId lid(LinearKind k, int64_t e = -1, bool shared = false) const { return LinearId{L_.index, k, e, shared}; }
  bool ignored(const LinearId& id) const { return p_.ignored && p_.ignored(id); }

  // out = awq_fake_quantize(w, s) on the device.
  void fake_quant(const float* w, int64_t rows, int64_t cols, const float* s, float* out) {
    const int g = resolve_group_size(p_.grid.group_size, static_cast<int>(cols));
    ANGELSLIM_CUDA_CHECK_LAUNCH(
        kernels::awq_fake_quant(ctx_.stream(), w, static_cast<int>(rows), static_cast<int>(cols), s, g, kind_,
                                p_.grid.bits, sdt_, out, flag_.data()),
        "awq_fake_quant");
  }
  void check_flag(const char* what) {
    int f = 0;
    download(ctx_, flag_.data(), 1, &f);
    if (f)
      throw InvalidInput(
          fmt::format("AWQ layer {} {}: a group scale is not finite and positive after rounding to the "
                      "scale dtype",
                      L_.index, what));
  }

  // Tries every alpha (or the fixed one): eval(s_dev, loss_dev) adds the group's unnormalised loss for scales s_dev
  // into *loss_dev; loss = that / denom; the strict minimum wins (as the CPU).
  GroupResult search(const std::string& name, const std::vector<float>& x_mean, int64_t tokens, int64_t search_tokens,
                     double denom, const std::function<void(const float*, double*)>& eval) {
    GroupResult r;
    r.name = name;
    r.tokens = tokens;
    r.search_tokens = search_tokens;
    if (p_.fixed_alpha) {
      r.alpha = *p_.fixed_alpha;
      r.s = awq_scales(x_mean, r.alpha);
      return r;
    }
    const int64_t K = static_cast<int64_t>(x_mean.size());
    std::vector<std::vector<float>> scales;
    std::vector<float> all;
    all.reserve(sz(K * kAwqAlphaSteps));
    for (int i = 0; i < kAwqAlphaSteps; ++i) {
      scales.push_back(awq_scales(x_mean, awq_alpha(i)));
      all.insert(all.end(), scales.back().begin(), scales.back().end());
    }
    s_dev_.ensure(all.size());
    upload(ctx_, all.data(), all.size(), s_dev_.data());
    loss_dev_.ensure(kAwqAlphaSteps);
    ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(loss_dev_.data(), 0, sizeof(double) * kAwqAlphaSteps, ctx_.stream()));
    for (int i = 0; i < kAwqAlphaSteps; ++i) eval(s_dev_.data() + i * K, loss_dev_.data() + i);
    std::vector<double> raw(kAwqAlphaSteps);
    download(ctx_, loss_dev_.data(), raw.size(), raw.data());
    check_flag(name.c_str());
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i < kAwqAlphaSteps; ++i) {
      const double l = raw[sz(i)] / denom;
      if (!std::isfinite(l))
        throw Internal(
            fmt::format("AWQ layer {} group {}: loss at alpha {} is not finite", L_.index, name, awq_alpha(i)));
      r.losses.push_back(l);
      if (l < best) {
        best = l;
        r.alpha = awq_alpha(i);
        r.s = scales[sz(i)];
      }
    }
    return r;
  }

  // Single-linear group: loss = Σ_r (W'-W)_r G (W'-W)_rᵀ / (n · rows), G the device Gram matrix of its input.
  GroupResult search_gram(const std::string& name, CudaDecoderLayer& S, const LinearId& id, const Linear& lin,
                          const AwqStatsObserver::Down& st, const std::vector<double>& sum) {
    const auto x_mean = mean_of(sum, st.n, st.k);
    const double denom = static_cast<double>(st.n) * static_cast<double>(lin.n_out);
    const int64_t rows = lin.n_out, cols = lin.n_in;
    const float* w = S.weights_f32(id);
    w_hat_.ensure(sz(rows * cols));
    e_.ensure(sz(rows * cols));
    return search(name, x_mean, st.n, st.n, denom, [&](const float* s, double* loss) {
      fake_quant(w, rows, cols, s, w_hat_.data());
      ANGELSLIM_CUDA_CHECK_LAUNCH(
          kernels::sub_f32(ctx_.stream(), ctx_.sm_count(), w_hat_.data(), w, w_hat_.data(), rows * cols), "sub_f32");
      // e = d · G (G symmetric, so linear's d · Gᵀ is the same product).
      linear(ctx_, w_hat_.data(), rows, cols, st.gram.data(), cols, nullptr, e_.data());
      ANGELSLIM_CUDA_CHECK_LAUNCH(
          kernels::dot_f64(ctx_.stream(), ctx_.sm_count(), w_hat_.data(), e_.data(), rows * cols, loss), "dot_f64");
    });
  }

  std::vector<double> download_sum(const DeviceBuffer<double>& b) {
    std::vector<double> h(b.size());
    download(ctx_, b.data(), h.size(), h.data());
    return h;
  }

  // The clip search of one linear on the device: w (host, scaled) is clamped in place; returns m* [rows, n_groups].
  std::vector<float> clip(std::vector<float>& w, int64_t rows, int64_t cols, const float* x, int64_t n) {
    const int g = resolve_group_size(p_.grid.group_size, static_cast<int>(cols));
    const int64_t ng = cols / g;
    clip_w_.ensure(sz(rows * cols));
    upload(ctx_, w.data(), w.size(), clip_w_.data());
    clip_gram_.ensure(sz(ng * g * g));
    // Each group's Gram block Xᵀ X / n over the sampled rows (x [n, cols] row-major): in column-major terms the
    // group's columns form a g × n matrix A (leading dimension cols), and G = A Aᵀ / n.
    const float alpha = 1.0f / static_cast<float>(n), beta = 0.0f;
    ANGELSLIM_CUBLAS_CHECK(cublas().sgemm_strided_batched(
        ctx_.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, g, g, static_cast<int>(n), &alpha, x, static_cast<int>(cols), g, x,
        static_cast<int>(cols), g, &beta, clip_gram_.data(), g, static_cast<long long>(g) * g, static_cast<int>(ng)));
    clip_m_.ensure(sz(rows * ng));
    ANGELSLIM_CUDA_CHECK_LAUNCH(
        kernels::awq_clip(ctx_.stream(), clip_w_.data(), static_cast<int>(rows), static_cast<int>(cols), g,
                          clip_gram_.data(), kind_, p_.grid.bits, sdt_, clip_m_.data(), flag_.data()),
        "awq_clip");
    std::vector<float> m(sz(rows * ng));
    download(ctx_, clip_m_.data(), m.size(), m.data());
    download(ctx_, clip_w_.data(), w.size(), w.data());
    check_flag("clip search");
    return m;
  }

  const ModelConfig& cfg_;
  const AwqDeviceParams& p_;
  DecoderLayer& L_;
  CudaCalibActivations& acts_;
  CudaContext& ctx_;
  json& report_;
  AwqDeviceOutput& out_;
  int64_t T_, H_;
  std::string prefix_;
  std::vector<float> inv_freq_;
  int kind_, sdt_;
  ForwardOptions fopt_, search_opt_;
  std::vector<int64_t> sub_begin_, sub_row_;
  int64_t sub_tokens_ = 0;
  DeviceBuffer<int> flag_;
  DeviceBuffer<float> s_dev_, w_hat_, e_, clip_w_, clip_gram_, clip_m_;
  DeviceBuffer<double> loss_dev_;
};

void LayerAwq::run() {
  const auto t0 = Clock::now();
  const bool rb = fopt_.round_bf16;
  const bool mha = cfg_.n_heads == cfg_.n_kv_heads;
  const int64_t qd = cfg_.n_heads * cfg_.head_dim;
  const int64_t clip_stride = ceil_div(T_, kAwqClipMaxTokens);
  const int64_t n_experts = L_.is_moe ? static_cast<int64_t>(L_.experts.size()) : 0;
  // ---- Statistics (SPEC 4.5.1). Without clipping, the scaled block's FP outputs equal this pass's (scaling is
  // exact up to BF16 rounding points): advance now, as the CPU quantizer does.
  auto obs = std::make_unique<AwqStatsObserver>(ctx_, cfg_, T_, sub_row_, sub_tokens_, clip_stride, mha, p_.mse_range,
                                                fopt_.round_bf16, n_experts);
  acts_.run_observed(L_, fopt_, *obs, !p_.mse_range);
  acts_.invalidate_layer();  // frees its weights for the search; L_ changes below
  std::vector<double> m_sum_dev(sz(H_), 0.0);
  {
    DeviceBuffer<double> ms(sz(H_));
    ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(ms.data(), 0, sizeof(double) * sz(H_), ctx_.stream()));
    ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::abs_sum_columns(ctx_.stream(), obs->m_all.data(), T_, H_, ms.data()),
                                "abs_sum_columns");
    m_sum_dev = download_sum(ms);
  }
  const double stats_s = since(t0);

  const auto t_search = Clock::now();
  const int64_t budget = p_.search_tokens;
  GroupResult attn_in, attn_out, mlp_in;
  const int64_t threshold =
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil(p_.min_token_fraction * static_cast<double>(T_))));
  struct OutGroup {
    GroupResult r;
    Mlp* mlp;
    LinearId down_id;
  };
  std::vector<OutGroup> outs;
  std::vector<std::pair<LinearId, Linear*>> mlp_in_members;
  if (!L_.is_moe) {
    mlp_in_members = {{lid(LinearKind::kGate), &L_.mlp.gate}, {lid(LinearKind::kUp), &L_.mlp.up}};
  } else {
    if (L_.has_shared)
      mlp_in_members = {{lid(LinearKind::kGate, -1, true), &L_.mlp.gate}, {lid(LinearKind::kUp, -1, true), &L_.mlp.up}};
    for (std::size_t e = 0; e < L_.experts.size(); ++e) {
      mlp_in_members.push_back({lid(LinearKind::kGate, static_cast<int64_t>(e)), &L_.experts[e].gate});
      mlp_in_members.push_back({lid(LinearKind::kUp, static_cast<int64_t>(e)), &L_.experts[e].up});
    }
  }
  {
    // The FP32 copy of the layer the sub-block losses run on (SPEC 4.5.2: FP32 evaluations).
    CudaDecoderLayer S(ctx_, cfg_, L_, inv_freq_, DeviceWeights::kF32);
    DeviceBuffer<float> y_ref, y;
    // Keeps the original weights of `members` and returns the device copies.
    auto originals = [&](const std::vector<std::pair<LinearId, Linear*>>& members) {
      std::vector<DeviceBuffer<float>> o;
      for (const auto& [id, lin] : members) {
        o.emplace_back(sz(lin->n_out * lin->n_in));
        ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(o.back().data(), S.weights_f32(id),
                                             sizeof(float) * sz(lin->n_out * lin->n_in), cudaMemcpyDeviceToDevice,
                                             ctx_.stream()));
      }
      return o;
    };

    // ---- attn-in: q, k, v after input_layernorm; M = the attention sub-block on whole samples.
    if (ignored(lid(LinearKind::kQ)) || ignored(lid(LinearKind::kK)) || ignored(lid(LinearKind::kV))) {
      attn_in = skipped_group("attn-in", T_, "q/k/v ignored");
    } else {
      const int64_t n_sub = sub_tokens_;
      std::vector<int64_t> offsets = sub_begin_;
      offsets.push_back(n_sub);
      const std::vector<std::pair<LinearId, Linear*>> members = {
          {lid(LinearKind::kQ), &L_.q}, {lid(LinearKind::kK), &L_.k}, {lid(LinearKind::kV), &L_.v}};
      auto orig = originals(members);
      y_ref.ensure(sz(n_sub * H_));
      y.ensure(sz(n_sub * H_));
      if (!p_.fixed_alpha)
        S.attention_block(obs->a_sub.data(), n_sub, 0, search_opt_, nullptr, nullptr, y_ref.data(), offsets);
      const double denom = static_cast<double>(n_sub) * static_cast<double>(H_);
      attn_in =
          search("attn-in", mean_of(download_sum(obs->q_sum), obs->q_n, H_), obs->q_n, n_sub, denom,
                 [&](const float* s, double* loss) {
                   for (std::size_t i = 0; i < members.size(); ++i) {
                     const Linear& lin = *members[i].second;
                     fake_quant(orig[i].data(), lin.n_out, lin.n_in, s, S.weights_f32(members[i].first));
                   }
                   S.attention_block(obs->a_sub.data(), n_sub, 0, search_opt_, nullptr, nullptr, y.data(), offsets);
                   ANGELSLIM_CUDA_CHECK_LAUNCH(
                       kernels::sq_diff_f64(ctx_.stream(), ctx_.sm_count(), y.data(), y_ref.data(), n_sub * H_, loss),
                       "sq_diff_f64");
                 });
    }

    // ---- attn-out: v rows -> o, only for MHA; o alone is evaluated, so its Gram matrix gives the loss.
    if (!mha) {
      attn_out = skipped_group("attn-out", obs->o_n, "grouped-query attention (n_heads != n_kv_heads)");
    } else if (ignored(lid(LinearKind::kV)) || ignored(lid(LinearKind::kO))) {
      attn_out = skipped_group("attn-out", obs->o_n, "v_proj or o_proj ignored");
    } else {
      AwqStatsObserver::Down st;
      st.n = obs->o_n;
      st.k = qd;
      st.gram = std::move(obs->o_gram_);
      attn_out = search_gram("attn-out", S, lid(LinearKind::kO), L_.o, st, download_sum(obs->o_sum));
      obs->o_gram_ = std::move(st.gram);
    }

    // ---- mlp-in / moe-in: gate, up (shared and every expert) after post_attention_layernorm; M = the MLP or the
    // whole MoE block (routing from the unscaled input).
    const std::string in_name = L_.is_moe ? "moe-in" : "mlp-in";
    bool mlp_in_ignored = false;
    for (const auto& [id, lin] : mlp_in_members) mlp_in_ignored |= ignored(id);
    if (mlp_in_ignored) {
      mlp_in = skipped_group(in_name, T_, "a gate/up projection of the group is ignored");
    } else {
      const int64_t stride = budget > 0 ? std::max<int64_t>(1, ceil_div(T_, budget)) : 1;
      const int64_t n_sub = ceil_div(T_, stride);
      std::vector<int64_t> rows(sz(n_sub));
      for (int64_t i = 0; i < n_sub; ++i) rows[sz(i)] = i * stride;
      DeviceBuffer<float> m(sz(n_sub * H_));
      DeviceBuffer<int64_t> idx;
      gather_rows(ctx_, obs->m_all.data(), H_, upload_index(ctx_, idx, rows), n_sub, m.data());
      auto orig = originals(mlp_in_members);
      y_ref.ensure(sz(n_sub * H_));
      y.ensure(sz(n_sub * H_));
      if (!p_.fixed_alpha) S.ffn_block(m.data(), n_sub, search_opt_, nullptr, y_ref.data());
      const double denom = static_cast<double>(n_sub) * static_cast<double>(H_);
      mlp_in = search(in_name, mean_of(m_sum_dev, T_, H_), T_, n_sub, denom, [&](const float* s, double* loss) {
        for (std::size_t i = 0; i < mlp_in_members.size(); ++i) {
          const Linear& lin = *mlp_in_members[i].second;
          fake_quant(orig[i].data(), lin.n_out, lin.n_in, s, S.weights_f32(mlp_in_members[i].first));
        }
        S.ffn_block(m.data(), n_sub, search_opt_, nullptr, y.data());
        ANGELSLIM_CUDA_CHECK_LAUNCH(
            kernels::sq_diff_f64(ctx_.stream(), ctx_.sm_count(), y.data(), y_ref.data(), n_sub * H_, loss),
            "sq_diff_f64");
      });
    }

    // ---- mlp-out / shared-out / expert-out: up rows -> down, evaluated on down alone (Gram over all its tokens).
    auto out_group = [&](const std::string& name, Mlp& mlp, int64_t e, bool shared) {
      const LinearId up_id = lid(LinearKind::kUp, e, shared), down_id = lid(LinearKind::kDown, e, shared);
      auto it = obs->down.find(e);
      const int64_t n = it == obs->down.end() ? 0 : it->second.n;
      OutGroup g{skipped_group(name, n, ""), &mlp, down_id};
      if (ignored(up_id) || ignored(down_id))
        g.r.skipped = "up_proj or down_proj ignored";
      else if (e >= 0 && n < threshold)
        g.r.skipped = fmt::format("starving expert ({} < {} tokens): s = 1", n, threshold);
      else
        g.r = search_gram(name, S, down_id, mlp.down, it->second, download_sum(it->second.sum));
      outs.push_back(std::move(g));
    };
    if (!L_.is_moe) out_group("mlp-out", L_.mlp, -1, false);
    if (L_.is_moe && L_.has_shared) out_group("shared-out", L_.mlp, -1, true);
    for (std::size_t e = 0; e < L_.experts.size(); ++e)
      out_group("expert-out." + std::to_string(e), L_.experts[e], static_cast<int64_t>(e), false);
  }
  obs->down.clear();  // the Gram matrices
  obs->o_gram_ = DeviceBuffer<float>();
  const double search_s = since(t_search);

  // ---- Apply in the order of SPEC 4.5.3 / 4.5.4 (host, the CPU quantizer's code).
  AwqLayerScales chosen{attn_in.s, attn_out.s, mlp_in.s, mlp_in_members, {}};
  for (const auto& g : outs) {
    LinearId up_id = g.down_id;
    up_id.kind = LinearKind::kUp;
    chosen.mlp_out.push_back({g.mlp, up_id, g.r.s});
  }
  const AwqFolded folded = apply_awq_scales(
      L_, cfg_, chosen, [&](const std::string& n) { return p_.source_dtype(n); }, out_.modified);
  const std::vector<float>&s_attn_in = folded.attn_in, &s_mlp_in = folded.mlp_in;

  // ---- Clip inputs (SPEC 4.5.6) on the device, from the scaled FP block before any clipping.
  const auto t_clip = Clock::now();
  struct ClipX {
    DeviceBuffer<float> x;
    int64_t n = 0;
  };
  std::map<std::string, ClipX> clip_x;
  DeviceBuffer<int64_t> idx;
  auto device_vec = [&](const std::vector<float>& v) { return to_device(ctx_, v); };
  if (p_.mse_range) {
    const int64_t n_clip = ceil_div(T_, clip_stride);
    {
      ClipX c;
      c.n = n_clip;
      c.x = std::move(obs->a_clip);
      if (!s_attn_in.empty()) {
        auto s = device_vec(s_attn_in);
        ANGELSLIM_CUDA_CHECK_LAUNCH(
            kernels::divide_columns(ctx_.stream(), ctx_.sm_count(), c.x.data(), n_clip, H_, s.data()),
            "divide_columns");
        ctx_.synchronize();
      }
      clip_x[lid(LinearKind::kV).rel_name()] = std::move(c);
    }
    {
      ClipX c;
      c.n = n_clip;
      c.x = std::move(obs->o_rows);
      if (!attn_out.s.empty()) {
        auto s = device_vec(attn_out.s);
        ANGELSLIM_CUDA_CHECK_LAUNCH(
            kernels::divide_columns(ctx_.stream(), ctx_.sm_count(), c.x.data(), n_clip, qd, s.data()),
            "divide_columns");
        ctx_.synchronize();
      }
      clip_x[lid(LinearKind::kO).rel_name()] = std::move(c);
    }
    DeviceBuffer<float> s_mlp_dev;
    if (!s_mlp_in.empty()) s_mlp_dev = device_vec(s_mlp_in);
    auto mlp_clip = [&](Mlp& mlp, const std::vector<int64_t>* tokens, int64_t e, bool shared) {
      const int64_t n = tokens ? static_cast<int64_t>(tokens->size()) : T_;
      const int64_t st = std::max<int64_t>(1, ceil_div(n, kAwqClipMaxTokens));
      const int64_t nc = n == 0 ? 0 : ceil_div(n, st);
      std::vector<int64_t> rows(sz(nc));
      for (int64_t i = 0; i < nc; ++i) rows[sz(i)] = tokens ? (*tokens)[sz(i * st)] : i * st;
      ClipX xm;
      xm.n = nc;
      xm.x.reset(sz(std::max<int64_t>(nc, 1) * H_));
      ClipX xd;
      xd.n = nc;
      const int64_t dff = mlp.gate.n_out;
      xd.x.reset(sz(std::max<int64_t>(nc, 1) * dff));
      if (nc > 0) {
        gather_rows(ctx_, obs->m_all.data(), H_, upload_index(ctx_, idx, rows), nc, xm.x.data());
        if (!s_mlp_dev.empty())
          ANGELSLIM_CUDA_CHECK_LAUNCH(
              kernels::divide_columns(ctx_.stream(), ctx_.sm_count(), xm.x.data(), nc, H_, s_mlp_dev.data()),
              "divide_columns");
        // Down inputs SiLU(gate x) * up x from the scaled gate/up, rounded like the forward pass.
        auto gw = device_vec(mlp.gate.w), uw = device_vec(mlp.up.w);
        DeviceBuffer<float> gb, ub, u(sz(nc * dff));
        if (!mlp.gate.bias.empty()) gb = device_vec(mlp.gate.bias);
        if (!mlp.up.bias.empty()) ub = device_vec(mlp.up.bias);
        linear(ctx_, xm.x.data(), nc, H_, gw.data(), dff, gb.empty() ? nullptr : gb.data(), xd.x.data());
        linear(ctx_, xm.x.data(), nc, H_, uw.data(), dff, ub.empty() ? nullptr : ub.data(), u.data());
        if (rb) {
          round_bf16_inplace(ctx_, xd.x.data(), nc * dff);
          round_bf16_inplace(ctx_, u.data(), nc * dff);
        }
        swiglu(ctx_, xd.x.data(), u.data(), xd.x.data(), nc * dff, rb);
        ctx_.synchronize();
      }
      ClipX xm2;
      xm2.n = nc;
      xm2.x.reset(xm.x.size());
      ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(xm2.x.data(), xm.x.data(), xm.x.size() * sizeof(float),
                                           cudaMemcpyDeviceToDevice, ctx_.stream()));
      clip_x[lid(LinearKind::kGate, e, shared).rel_name()] = std::move(xm);
      clip_x[lid(LinearKind::kUp, e, shared).rel_name()] = std::move(xm2);
      clip_x[lid(LinearKind::kDown, e, shared).rel_name()] = std::move(xd);
    };
    if (!L_.is_moe || L_.has_shared) mlp_clip(L_.mlp, nullptr, -1, L_.is_moe);
    for (std::size_t e = 0; e < L_.experts.size(); ++e)
      mlp_clip(L_.experts[e], &obs->expert_tokens[e], static_cast<int64_t>(e), false);
  }
  obs->m_all = DeviceBuffer<float>();
  obs->a_sub = DeviceBuffer<float>();

  // ---- Per linear: clip (all but q/k) on the device, then RTN on the export grid (host threads), report.
  auto alpha_of = [&](const LinearId& id) -> json {
    const GroupResult* g = nullptr;
    switch (id.kind) {
      case LinearKind::kQ:
      case LinearKind::kK:
      case LinearKind::kV:
        g = &attn_in;
        break;
      case LinearKind::kO:
        g = &attn_out;
        break;
      case LinearKind::kGate:
      case LinearKind::kUp:
        g = &mlp_in;
        break;
      case LinearKind::kDown:
        for (const auto& o : outs)
          if (o.down_id.rel_name() == id.rel_name()) g = &o.r;
        break;
    }
    if (!g || g->s.empty()) return nullptr;
    return g->alpha;
  };
  struct Pending {
    LinearId id;
    json rec;
    std::vector<float> w_scaled;
    std::future<QuantizedMatrix> q;
    Clock::time_point start;
  };
  std::vector<Pending> pending;
  for (auto& [id, lin] : layer_linears(L_)) {
    if (ignored(id)) continue;
    Pending pd;
    pd.start = Clock::now();
    pd.id = id;
    const int rows = static_cast<int>(lin->n_out), cols = static_cast<int>(lin->n_in);
    pd.w_scaled = lin->w;
    pd.rec = {{"name", id.rel_name()}, {"method", "awq"}, {"alpha", alpha_of(id)}, {"clip_ratio", nullptr}};
    int64_t tokens = T_;
    if (id.expert >= 0) tokens = static_cast<int64_t>(obs->expert_tokens[sz(id.expert)].size());
    pd.rec["tokens"] = tokens;
    if (id.expert >= 0 && tokens < threshold) pd.rec["starving"] = true;
    auto cx = clip_x.find(id.rel_name());
    if (p_.mse_range && id.kind != LinearKind::kQ && id.kind != LinearKind::kK && cx != clip_x.end() &&
        cx->second.n > 0) {
      const auto m = clip(lin->w, rows, cols, cx->second.x.data(), cx->second.n);
      const int g = resolve_group_size(p_.grid.group_size, cols), ng = cols / g;
      double ratio = 0.0;
      for (int r = 0; r < rows; ++r)
        for (int gi = 0; gi < ng; ++gi) {
          float m0 = 0.0f;
          for (int j = 0; j < g; ++j) m0 = std::max(m0, std::fabs(pd.w_scaled[sz(int64_t(r) * cols + gi * g + j)]));
          ratio += m0 > 0.0f ? m[sz(int64_t(r) * ng + gi)] / m0 : 1.0;
        }
      pd.rec["clip_ratio"] = ratio / (static_cast<double>(rows) * ng);
      pd.rec["clip_tokens"] = cx->second.n;
      clip_x.erase(cx);  // frees its device rows
    }
    pd.q = std::async(std::launch::async,
                      [w = lin->w, rows, cols, grid = p_.grid] { return rtn_quantize(w, rows, cols, grid); });
    pending.push_back(std::move(pd));
  }
  json& linears = report_["linears"];
  for (auto& pd : pending) {
    QuantizedMatrix qm = pd.q.get();
    double num = 0, den = 0;
    for (std::size_t i = 0; i < pd.w_scaled.size(); ++i) {
      num += static_cast<double>(qm.dequant[i] - pd.w_scaled[i]) * (qm.dequant[i] - pd.w_scaled[i]);
      den += static_cast<double>(pd.w_scaled[i]) * pd.w_scaled[i];
    }
    pd.rec["err_rel"] = den > 0 ? std::sqrt(num / den) : 0.0;
    AwqDeviceLinear o;
    o.rows = qm.rows;
    o.cols = qm.cols;
    o.n_groups = qm.n_groups;
    o.codes = std::move(qm.codes);
    o.scales = std::move(qm.scales);
    o.zeros = std::move(qm.zeros);
    out_.linears[pd.id.full_name()] = std::move(o);
    pd.rec["seconds"] = since(pd.start);
    linears.push_back(std::move(pd.rec));
  }

  json gj = json::array();
  gj.push_back(attn_in.to_json());
  gj.push_back(attn_out.to_json());
  gj.push_back(mlp_in.to_json());
  for (const auto& g : outs) gj.push_back(g.r.to_json());
  report_["awq_groups"] = std::move(gj);
  report_["awq_seconds"] = {{"search", search_s}, {"clip_and_quantize", since(t_clip)}, {"stats", stats_s}};
  if (L_.is_moe) {
    json tok = json::array(), st = json::array();
    for (std::size_t e = 0; e < obs->expert_tokens.size(); ++e) {
      const auto n = static_cast<int64_t>(obs->expert_tokens[e].size());
      tok.push_back(n);
      if (n < threshold) st.push_back({{"expert", e}, {"tokens", n}, {"threshold", threshold}});
    }
    report_["expert_tokens"] = tok;
    report_["starving_experts"] = st;
  }
  obs.reset();
  if (p_.mse_range) {
    // Clipping changed the block: propagate with its FP outputs (the scaled, clipped weights and folded norms).
    const auto t1 = Clock::now();
    acts_.advance_stats(L_, fopt_, StatsSpec{});
    acts_.invalidate_layer();
    report_["awq_seconds"]["advance"] = since(t1);
  }
}

}  // namespace
}  // namespace cuda

void cuda_awq_quantize_layer(const ModelConfig& cfg, const AwqDeviceParams& params, DecoderLayer& layer,
                             CalibBackend& calib, json& report, AwqDeviceOutput& out) {
  auto* acts = dynamic_cast<cuda::CudaCalibActivations*>(&calib);
  ANGELSLIM_CHECK(acts != nullptr, Unsupported, "AWQ on the {} backend: expected the CUDA backend",
                  calib.device_name());
  if (!report.contains("linears")) report["linears"] = json::array();
  cuda::LayerAwq(cfg, params, layer, *acts, report, out).run();
}

}  // namespace angelslim
