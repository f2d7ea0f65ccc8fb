// The GPU GPTQ solver (backend/cuda_gptq.h) against the CPU gptq_quantize on the same W and H: every order mode,
// both grids, 4/8 bits, groups 32/128/per-channel, fp16 scales, dead columns, a block size that does not divide K,
// and a Hessian no damping can factor (the CPU fallback). Both run the same algorithm in FP32 with the FP64
// factorisation; they differ in summation order (cuBLAS vs OpenBLAS block updates, cuSOLVER vs LAPACK), so a code
// may differ where the updated weight sits within a few fp32 ulps of a rounding boundary, and every later column of
// that row then sees a slightly different error. Tolerances (measured: see the [gpu-gptq] lines): codes <= 0.5%
// different, |Δcode| <= 1 except where such a near-tie cascades; permutation, g_idx and static scales identical;
// W_hat relative error <= 1e-2 of ||W - W_hat||; loss and output error within 1% of the CPU's.
#include "angelslim/backend/cuda_gptq.h"

#include <cblas.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>

#include "angelslim/backend/cuda_calib.h"
#include "angelslim/core/error.h"
#include "gpu/gpu_test_util.h"

namespace angelslim {
namespace {

using gputest::ctx;

// H = (2/N) XᵀX from N correlated random rows (a few dominant directions, like real activations).
std::vector<float> hessian(int k, int n, uint64_t seed, int dead_every = 0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n) * k), basis(static_cast<std::size_t>(8) * k);
  for (auto& v : basis) v = nd(rng);
  for (int t = 0; t < n; ++t)
    for (int c = 0; c < k; ++c) {
      float v = 0.3f * nd(rng);
      for (int b = 0; b < 8; ++b) v += 0.5f * basis[static_cast<std::size_t>(b) * k + c] * (b + 1) * 0.2f * nd(rng);
      if (dead_every && c % dead_every == 3) v = 0.0f;
      x[static_cast<std::size_t>(t) * k + c] = round_bf16(v);
    }
  std::vector<float> h(static_cast<std::size_t>(k) * k, 0.0f);
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, k, n, 2.0f / n, x.data(), k, 0.0f, h.data(), k);
  for (int r = 0; r < k; ++r)
    for (int c = r + 1; c < k; ++c) h[static_cast<std::size_t>(c) * k + r] = h[static_cast<std::size_t>(r) * k + c];
  return h;
}

double rel_output_error(const std::vector<float>& w, const std::vector<float>& w_hat, int rows, int k,
                        const std::vector<float>& h) {
  auto quad = [&](const std::vector<float>& m) {
    std::vector<float> mh(m.size());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, k, k, 1.0f, m.data(), k, h.data(), k, 0.0f, mh.data(),
                k);
    double s = 0;
    for (std::size_t i = 0; i < m.size(); ++i) s += double(mh[i]) * m[i];
    return s;
  };
  std::vector<float> d(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) d[i] = w_hat[i] - w[i];
  return std::sqrt(quad(d) / quad(w));
}

struct Case {
  const char* label;
  int rows, k, n_tokens;
  GptqOptions opt;
  int dead_every = 0;
};

TEST(CudaGptq, MatchesCpuSolver) {
  ANGELSLIM_REQUIRE_GPU();
  auto mk = [](int bits, int group, bool sym, GptqOrder order, ScaleDType sd = ScaleDType::kBF16, int block = 128) {
    GptqOptions o;
    o.bits = bits;
    o.group_size = group;
    o.sym = sym;
    o.order = order;
    o.scale_dtype = sd;
    o.block_size = block;
    return o;
  };
  const Case cases[] = {
      {"w4 g128 natural", 384, 512, 2048, mk(4, 128, true, GptqOrder::kNatural)},
      {"w4 g128 static", 384, 512, 2048, mk(4, 128, true, GptqOrder::kActOrderStatic)},
      {"w4 g128 fold", 256, 1024, 4096, mk(4, 128, true, GptqOrder::kFold)},
      {"w4 g128 desc_act", 384, 512, 2048, mk(4, 128, true, GptqOrder::kDescAct)},
      {"w8 g128 static", 384, 512, 2048, mk(8, 128, true, GptqOrder::kActOrderStatic)},
      {"w4 g32 asym f16 natural", 256, 384, 2048, mk(4, 32, false, GptqOrder::kNatural, ScaleDType::kF16)},
      {"w4 per-channel desc_act", 200, 320, 1024, mk(4, -1, true, GptqOrder::kDescAct)},
      {"w4 g64 block 96 dead cols", 160, 448, 1024, mk(4, 64, true, GptqOrder::kDescAct, ScaleDType::kBF16, 96), 17},
  };
  cuda::GptqCudaWorkspace ws(ctx());
  uint64_t seed = 11;
  for (const Case& c : cases) {
    const auto w = gputest::random_vec(static_cast<std::size_t>(c.rows) * c.k, ++seed, -0.05f, 0.05f, true);
    const auto h = hessian(c.k, c.n_tokens, ++seed, c.dead_every);
    const GptqResult a = gptq_quantize(w, c.rows, c.k, h, c.opt);
    const GptqResult b = ws.quantize(w, c.rows, c.k, h, c.opt);
    ASSERT_FALSE(a.fallback) << c.label;
    EXPECT_FALSE(b.fallback) << c.label;
    EXPECT_EQ(a.perm, b.perm) << c.label;
    EXPECT_EQ(a.g_idx, b.g_idx) << c.label;
    EXPECT_EQ(a.n_dead, b.n_dead) << c.label;
    EXPECT_EQ(a.damp, b.damp) << c.label;
    int64_t diff = 0, big = 0, sdiff = 0;
    for (std::size_t i = 0; i < a.codes.size(); ++i) {
      diff += a.codes[i] != b.codes[i];
      big += std::abs(int(a.codes[i]) - int(b.codes[i])) > 1;
    }
    for (std::size_t i = 0; i < a.scales.size(); ++i) sdiff += a.scales[i] != b.scales[i] || a.zeros[i] != b.zeros[i];
    double num = 0, den = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
      num += double(a.w_hat[i] - b.w_hat[i]) * (a.w_hat[i] - b.w_hat[i]);
      den += double(w[i] - a.w_hat[i]) * (w[i] - a.w_hat[i]);
    }
    const double what_rel = std::sqrt(num / den);
    const double oe_cpu = rel_output_error(w, a.w_hat, c.rows, c.k, h);
    std::printf(
        "[gpu-gptq] %-28s codes %lld/%zu differ (%lld by >1), group params %lld differ, W_hat rel %.2e, "
        "loss %.6g/%.6g, out_err cpu %.6g gpu %.6g\n",
        c.label, static_cast<long long>(diff), a.codes.size(), static_cast<long long>(big),
        static_cast<long long>(sdiff), what_rel, a.loss, b.loss, oe_cpu, b.out_err);
    EXPECT_LE(static_cast<double>(diff), 5e-3 * static_cast<double>(a.codes.size())) << c.label;
    EXPECT_LE(static_cast<double>(big), 1e-3 * static_cast<double>(a.codes.size())) << c.label;
    if (c.opt.order == GptqOrder::kActOrderStatic) {
      EXPECT_EQ(sdiff, 0) << c.label;
    }
    EXPECT_LE(what_rel, 1e-2) << c.label;
    EXPECT_NEAR(b.loss, a.loss, 1e-2 * a.loss) << c.label;
    EXPECT_NEAR(b.out_err, oe_cpu, 1e-2 * oe_cpu) << c.label;
    EXPECT_NEAR(b.err_fro, a.err_fro, 1e-2 * a.err_fro) << c.label;
    // The GPU result's W_hat is rebuilt on the host from its codes; err_fro and out_err come from the device's own
    // W_hat. Both agree with the rebuilt one to rounding (a column or group mix-up would be off by far more).
    double e2 = 0;
    for (std::size_t i = 0; i < w.size(); ++i) e2 += double(b.w_hat[i] - w[i]) * (b.w_hat[i] - w[i]);
    EXPECT_NEAR(std::sqrt(e2), b.err_fro, 1e-6 * b.err_fro) << c.label;
    EXPECT_NEAR(rel_output_error(w, b.w_hat, c.rows, c.k, h), b.out_err, 1e-4 * b.out_err) << c.label;
  }
}

// A Hessian left on the device by the calibration pass (CudaDeviceMatrix: XᵀX and the factor 2/N) gives the result of
// the same H handed over from the host, bit for bit: the device forms H with the host's single FP32 product. A
// non-finite element is reported as on the host, and a Hessian no damping can factor takes the CPU fallback.
TEST(CudaGptq, DeviceHessianMatchesHostHessian) {
  ANGELSLIM_REQUIRE_GPU();
  const int rows = 256, k = 384, n = 1536;
  const float scale = 2.0f / static_cast<float>(n);
  // Some Gram matrix (with dead columns); H is its host product with the factor, as LayerStats::take forms it.
  const std::vector<float> xtx = hessian(k, n, 77, 29);
  std::vector<float> h(xtx.size());
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = xtx[i] * scale;
  auto on_device = [&](const std::vector<float>& m) {
    return Hessian(k, n, scale,
                   std::make_shared<cuda::CudaDeviceMatrix>(ctx().device(), k, k, cuda::to_device(ctx(), m)));
  };
  const auto w = gputest::random_vec(static_cast<std::size_t>(rows) * k, 78, -0.05f, 0.05f, true);
  cuda::GptqCudaWorkspace ws(ctx());
  for (GptqOrder order : {GptqOrder::kNatural, GptqOrder::kActOrderStatic, GptqOrder::kDescAct}) {
    GptqOptions o;
    o.order = order;
    const Hessian dev = on_device(xtx);
    ctx().synchronize();
    const GptqResult a = ws.quantize(w, rows, k, Hessian(k, n, h), o);
    const GptqResult b = ws.quantize(w, rows, k, dev, o);
    EXPECT_GT(a.n_dead, 0);
    EXPECT_EQ(a.n_dead, b.n_dead);
    EXPECT_EQ(a.perm, b.perm);
    EXPECT_EQ(a.codes, b.codes);
    EXPECT_EQ(a.scales, b.scales);
    EXPECT_EQ(a.zeros, b.zeros);
    // The loss and the traces are summed with device atomics, in no fixed order: equal up to that.
    EXPECT_NEAR(a.loss, b.loss, 1e-12 * a.loss);
    EXPECT_NEAR(a.out_err, b.out_err, 1e-12 * a.out_err);
    // W_hat left on the device is the host's rebuild from the codes, bit for bit.
    o.w_hat_on_device = true;
    const GptqResult c = ws.quantize(w, rows, k, dev, o);
    ASSERT_NE(c.w_hat_device, nullptr);
    EXPECT_TRUE(c.w_hat.empty());
    EXPECT_EQ(c.codes, a.codes);
    EXPECT_EQ(c.w_hat_device->to_host(), a.w_hat);
    EXPECT_NEAR(c.err_fro, a.err_fro, 1e-12 * a.err_fro);
    // The host copy of the device Hessian is the host's H.
    const auto back = dev.host();
    EXPECT_TRUE(std::equal(back.begin(), back.end(), h.begin(), h.end()));
  }
  std::vector<float> bad = xtx;
  bad[static_cast<std::size_t>(5) * k + 7] = std::numeric_limits<float>::infinity();
  try {
    (void)ws.quantize(w, rows, k, on_device(bad), GptqOptions{});
    ADD_FAILURE() << "a non-finite Hessian was accepted";
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("Hessian element [5, 7] is inf"), std::string::npos) << e.what();
  }
  std::vector<float> indefinite(xtx.size(), 0.0f);
  for (int i = 0; i < k; ++i) indefinite[static_cast<std::size_t>(i) * k + i] = 1.0f;
  indefinite[1] = indefinite[static_cast<std::size_t>(k)] = 50.0f;
  std::vector<float> indefinite_h(indefinite.size());
  for (std::size_t i = 0; i < indefinite.size(); ++i) indefinite_h[i] = indefinite[i] * scale;
  const GptqResult fa = gptq_quantize(w, rows, k, indefinite_h, GptqOptions{});
  const GptqResult fb = ws.quantize(w, rows, k, on_device(indefinite), GptqOptions{});
  ASSERT_TRUE(fa.fallback);
  EXPECT_TRUE(fb.fallback);
  EXPECT_EQ(fa.codes, fb.codes);
}

// A Hessian that no damping makes positive definite (a negative eigenvalue far below -0.16·mean diag): both solvers
// fall back to RTN with identical results (the GPU one runs the CPU fallback).
TEST(CudaGptq, FallbackMatchesCpu) {
  ANGELSLIM_REQUIRE_GPU();
  const int rows = 64, k = 128;
  std::vector<float> h(static_cast<std::size_t>(k) * k, 0.0f);
  for (int i = 0; i < k; ++i) h[static_cast<std::size_t>(i) * k + i] = 1.0f;
  h[1] = h[static_cast<std::size_t>(k)] = 50.0f;  // [[1, 50], [50, 1]] block: eigenvalue -49
  const auto w = gputest::random_vec(static_cast<std::size_t>(rows) * k, 5, -1.0f, 1.0f, true);
  GptqOptions o;
  cuda::GptqCudaWorkspace ws(ctx());
  const GptqResult a = gptq_quantize(w, rows, k, h, o);
  const GptqResult b = ws.quantize(w, rows, k, h, o);
  ASSERT_TRUE(a.fallback);
  EXPECT_TRUE(b.fallback);
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.w_hat, b.w_hat);
}

}  // namespace
}  // namespace angelslim
