// The calibration ops of cuda_ops.h (abs_max_accumulate, hessian_accumulate_bf16, split_bf16_terms,
// attention_bf16_gemm) against host references: running maxima exactly, Gram matrices against an FP64 product
// (relative L2 <= 1e-6: fp32 accumulation of exact bf16 products), the bf16 split exactly (t0 + t1 + t2 == w in FP64
// for every finite fp32 w), tensor-core attention against the CPU op in bf16 mode (relative L2 <= 3e-3, the bound of
// the SIMT kernel's test: one-ulp bf16 flips of probabilities and outputs), and the fused ragged kernel
// (attention_varlen_bf16) against the CPU op run on each sequence alone, with the same bound per sequence; the bf16
// embedding gather exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "angelslim/ops/cpu_ops.h"
#include "gpu/gpu_test_util.h"

namespace angelslim {
namespace {

using gputest::ctx;

GPU_OP_TEST(abs_max_accumulate, RunsAcrossCallsAndFlagsNonFinite) {
  ANGELSLIM_REQUIRE_GPU();
  const auto a = gputest::random_vec(100003, 1, -3.0f, 3.0f);
  auto b = gputest::random_vec(777, 2, -9.0f, 9.0f);
  float want = 0.0f;
  for (float v : a) want = std::max(want, std::fabs(v));
  float want2 = want;
  for (float v : b) want2 = std::max(want2, std::fabs(v));
  auto da = cuda::to_device(ctx(), a);
  auto db = cuda::to_device(ctx(), b);
  cuda::DeviceBuffer<float> out(1);
  const float zero = 0.0f;
  cuda::upload(ctx(), &zero, 1, out.data());
  cuda::abs_max_accumulate(ctx(), da.data(), static_cast<int64_t>(a.size()), out.data());
  EXPECT_EQ(cuda::to_host(ctx(), out.data(), 1)[0], want);
  cuda::abs_max_accumulate(ctx(), db.data(), static_cast<int64_t>(b.size()), out.data());
  cuda::abs_max_accumulate(ctx(), db.data(), 0, out.data());
  EXPECT_EQ(cuda::to_host(ctx(), out.data(), 1)[0], want2);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    b[400] = bad;
    auto dbad = cuda::to_device(ctx(), b);
    cuda::upload(ctx(), &zero, 1, out.data());
    cuda::abs_max_accumulate(ctx(), dbad.data(), static_cast<int64_t>(b.size()), out.data());
    const float got = cuda::to_host(ctx(), out.data(), 1)[0];
    EXPECT_FALSE(got <= 3.4e38f) << "a non-finite input must leave the maximum non-finite, got " << got;
  }
}

GPU_OP_TEST(hessian_accumulate_bf16, MatchesFp64ProductAndStaysSymmetric) {
  ANGELSLIM_REQUIRE_GPU();
  for (const auto& [n, k] : {std::pair{1, 7}, std::pair{129, 64}, std::pair{1000, 257}}) {
    const auto x = gputest::random_vec(static_cast<std::size_t>(n) * k, 3 + n, -2.0f, 2.0f, true);
    std::vector<uint16_t> x16(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) x16[i] = f32_to_bf16(x[i]);
    // Two accumulations (as two batches) onto a zero matrix.
    auto dx = cuda::to_device(ctx(), x16);
    std::vector<float> h0(static_cast<std::size_t>(k) * k, 0.0f);
    auto dh = cuda::to_device(ctx(), h0);
    cuda::hessian_accumulate_bf16(ctx(), dx.data(), n, k, dh.data());
    cuda::hessian_accumulate_bf16(ctx(), dx.data(), n, k, dh.data());
    const auto got = cuda::to_host(ctx(), dh.data(), h0.size());
    std::vector<float> ref(h0.size());
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b) {
        double s = 0;
        for (int t = 0; t < n; ++t)
          s += double(x[static_cast<std::size_t>(t) * k + a]) * x[static_cast<std::size_t>(t) * k + b];
        ref[static_cast<std::size_t>(a) * k + b] = static_cast<float>(2 * s);
      }
    EXPECT_CLOSE("hessian_accumulate_bf16 n=" + std::to_string(n) + " k=" + std::to_string(k),
                 gputest::compare(got, ref), 1e-6);
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < a; ++b)
        ASSERT_EQ(got[static_cast<std::size_t>(a) * k + b], got[static_cast<std::size_t>(b) * k + a]);
  }
}

GPU_OP_TEST(split_bf16_terms, ExactForEveryFiniteFloat) {
  ANGELSLIM_REQUIRE_GPU();
  // Three populations: bf16 values (one term), GPTQ-like (small integer × bf16 scale: two), arbitrary fp32 (three).
  std::vector<float> w;
  const auto a = gputest::random_vec(5000, 7, -1.0f, 1.0f, true);
  const auto s = gputest::random_vec(5000, 8, 1e-3f, 2e-2f, true);
  const auto c = gputest::random_vec(5000, 9, -1e3f, 1e3f);
  w.insert(w.end(), a.begin(), a.end());
  for (std::size_t i = 0; i < s.size(); ++i) w.push_back(static_cast<float>(static_cast<int>(i % 16) - 8) * s[i]);
  w.insert(w.end(), c.begin(), c.end());
  w.push_back(std::numeric_limits<float>::infinity());
  w.push_back(0.0f);
  auto dw = cuda::to_device(ctx(), w);
  cuda::DeviceBuffer<uint16_t> t0(w.size()), t1(w.size()), t2(w.size());
  cuda::DeviceBuffer<unsigned int> counts(3);
  const unsigned int z[3] = {0, 0, 0};
  cuda::upload(ctx(), z, 3, counts.data());
  cuda::split_bf16_terms(ctx(), dw.data(), static_cast<int64_t>(w.size()), t0.data(), t1.data(), t2.data(),
                         counts.data());
  const auto h0 = cuda::to_host(ctx(), t0.data(), w.size());
  const auto h1 = cuda::to_host(ctx(), t1.data(), w.size());
  const auto h2 = cuda::to_host(ctx(), t2.data(), w.size());
  const auto cnt = cuda::to_host(ctx(), counts.data(), 3);
  unsigned int n1 = 0, n2 = 0, bad = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(h0[i], f32_to_bf16(w[i])) << i;
    if (!std::isfinite(w[i])) {
      EXPECT_EQ(h1[i], 0);
      EXPECT_EQ(h2[i], 0);
      continue;
    }
    const double sum = double(bf16_to_f32(h0[i])) + double(bf16_to_f32(h1[i])) + double(bf16_to_f32(h2[i]));
    bad += sum != double(w[i]);
    n1 += bf16_to_f32(h1[i]) != 0.0f;
    n2 += bf16_to_f32(h2[i]) != 0.0f;
    if (i < 5000) {
      EXPECT_EQ(h1[i], 0) << "a bf16 value needs one term";
    }
    if (i >= 5000 && i < 10000) {
      EXPECT_EQ(bf16_to_f32(h2[i]), 0.0f) << "integer × bf16 scale needs two terms";
    }
  }
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(cnt[0], n1);
  EXPECT_EQ(cnt[1], n2);
  EXPECT_EQ(cnt[2], 0u);
  EXPECT_GT(n2, 1000u) << "arbitrary floats need the third term";
}

GPU_OP_TEST(attention_bf16_gemm, MatchesCpuInBf16Mode) {
  ANGELSLIM_REQUIRE_GPU();
  struct Case {
    int64_t n, nh, nkv, d;
  };
  // Boundaries of the 64-row chunks, GQA groups 1-3, both head sizes, causal query chunks (about four from 1024
  // tokens on), 8192 tokens, and rows past the softmax's shared-memory limit (12288 keys).
  const Case cases[] = {{1, 4, 2, 64},      {65, 6, 2, 64},     {300, 6, 3, 128},  {1100, 16, 8, 128},
                        {2048, 16, 8, 128}, {8192, 2, 1, 128}, {13000, 1, 1, 64}};
  cuda::AttentionWorkspace ws;
  uint64_t seed = 40;
  for (const auto& c : cases) {
    const auto q = gputest::random_vec(static_cast<std::size_t>(c.n * c.nh * c.d), ++seed, -1.5f, 1.5f, true);
    const auto k = gputest::random_vec(static_cast<std::size_t>(c.n * c.nkv * c.d), ++seed, -1.5f, 1.5f, true);
    const auto v = gputest::random_vec(static_cast<std::size_t>(c.n * c.nkv * c.d), ++seed, -1.0f, 1.0f, true);
    std::vector<float> ref(q.size());
    cpu::attention(q.data(), k.data(), v.data(), c.n, 0, c.nh, c.nkv, c.d, ref.data(), true);
    auto dq = cuda::to_device(ctx(), q), dk = cuda::to_device(ctx(), k), dv = cuda::to_device(ctx(), v);
    gputest::Guarded<float> out(q.size());
    cuda::attention_bf16_gemm(ctx(), dq.data(), dk.data(), dv.data(), c.n, c.nh, c.nkv, c.d, out.data(), ws);
    const std::string what = fmt::format("attention_bf16_gemm n={} nH={} nKV={} D={}", c.n, c.nh, c.nkv, c.d);
    EXPECT_CLOSE(what, gputest::compare(out.read(), ref), 3e-3);
    EXPECT_TRUE(out.guards_intact()) << what;
  }
}

// The embedding lookup in bf16: every value as the host's bf16 -> fp32 -> bf16 round trip (bit for bit, NaNs made
// quiet, signed zeros and infinities kept), repeated and boundary ids.
GPU_OP_TEST(gather_rows_bf16, ExactAsTheHostRoundTrip) {
  ANGELSLIM_REQUIRE_GPU();
  const int64_t rows = 1000, d = 72;
  std::vector<uint16_t> table(static_cast<std::size_t>(rows * d));
  std::mt19937 rng(5);
  for (auto& v : table) v = static_cast<uint16_t>(rng());
  table[0] = 0x7f81;  // signalling NaN
  table[1] = 0x8000;  // -0
  table[2] = 0x7f80;  // +inf
  const std::vector<int32_t> ids{0, 999, 5, 5, 0, 123, 998, 1};
  std::vector<uint16_t> want;
  for (int32_t id : ids)
    for (int64_t j = 0; j < d; ++j)
      want.push_back(f32_to_bf16(bf16_to_f32(table[static_cast<std::size_t>(id * d + j)])));
  auto dt = cuda::to_device(ctx(), table);
  auto di = cuda::to_device(ctx(), ids);
  cuda::DeviceBuffer<uint16_t> out(want.size());
  cuda::gather_rows_bf16(ctx(), dt.data(), d, di.data(), static_cast<int64_t>(ids.size()), out.data());
  EXPECT_EQ(cuda::to_host(ctx(), out.data(), want.size()), want);
  EXPECT_EQ(want[0], 0x7fc1) << "the host round trip makes a NaN quiet";
}

GPU_OP_TEST(attention_varlen_bf16, MatchesCpuPerSequence) {
  ANGELSLIM_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> lens;
    int64_t nh, nkv, d;
  };
  // Tile boundaries (63/64/65/128/129 rows), a 1-token sequence, empty sequences, GQA groups 1-4, both head sizes,
  // a 2048-token sequence among short ones (the hunyuan-0.5B shape), and one long sequence of 8192 tokens.
  const Case cases[] = {{{1}, 4, 2, 64},
                        {{65, 0, 63, 64, 1, 129}, 6, 2, 64},
                        {{300, 128, 7}, 6, 3, 128},
                        {{5, 2048, 200, 0, 1100}, 16, 8, 128},
                        {{8192}, 4, 1, 128},
                        {{97, 513, 31}, 8, 8, 64}};
  cuda::VarlenAttentionWorkspace ws;
  uint64_t seed = 90;
  for (const auto& c : cases) {
    std::vector<int64_t> offsets{0};
    for (int64_t len : c.lens) offsets.push_back(offsets.back() + len);
    const int64_t n = offsets.back();
    const auto q = gputest::random_vec(static_cast<std::size_t>(n * c.nh * c.d), ++seed, -1.5f, 1.5f, true);
    const auto k = gputest::random_vec(static_cast<std::size_t>(n * c.nkv * c.d), ++seed, -1.5f, 1.5f, true);
    const auto v = gputest::random_vec(static_cast<std::size_t>(n * c.nkv * c.d), ++seed, -1.0f, 1.0f, true);
    std::vector<float> ref(q.size());
    for (std::size_t s = 0; s < c.lens.size(); ++s) {
      const int64_t b = offsets[s];
      cpu::attention(q.data() + b * c.nh * c.d, k.data() + b * c.nkv * c.d, v.data() + b * c.nkv * c.d, c.lens[s], 0,
                     c.nh, c.nkv, c.d, ref.data() + b * c.nh * c.d, true);
    }
    auto dq = cuda::to_device(ctx(), q), dk = cuda::to_device(ctx(), k), dv = cuda::to_device(ctx(), v);
    gputest::Guarded<float> out(q.size());
    // Twice: the second call reuses the tile table of the first.
    for (int rep = 0; rep < 2; ++rep) {
      cuda::attention_varlen_bf16(ctx(), dq.data(), dk.data(), dv.data(), offsets, c.nh, c.nkv, c.d, out.data(), ws);
      const auto got = out.read();
      for (std::size_t s = 0; s < c.lens.size(); ++s) {
        if (c.lens[s] == 0) continue;
        const auto b = static_cast<std::size_t>(offsets[s] * c.nh * c.d),
                   e = static_cast<std::size_t>(offsets[s + 1] * c.nh * c.d);
        const std::string what = fmt::format("attention_varlen_bf16 sequence {} of {} ({} tokens) nH={} nKV={} D={}", s,
                                             c.lens.size(), c.lens[s], c.nh, c.nkv, c.d);
        EXPECT_CLOSE(what,
                     gputest::compare(std::vector<float>(got.begin() + b, got.begin() + e),
                                      std::vector<float>(ref.begin() + b, ref.begin() + e)),
                     3e-3);
      }
      EXPECT_TRUE(out.guards_intact());
    }
  }
  // The same layout as a batch: the results of one sequence do not depend on its neighbours (bitwise).
  {
    const std::vector<int64_t> one{0, 300}, three{0, 100, 400, 450};
    const auto q = gputest::random_vec(450 * 4 * 64, 7, -1.5f, 1.5f, true);
    const auto kv = gputest::random_vec(450 * 2 * 64, 8, -1.5f, 1.5f, true);
    auto dq = cuda::to_device(ctx(), q), dk = cuda::to_device(ctx(), kv);
    cuda::DeviceBuffer<float> a(q.size()), b(q.size());
    cuda::attention_varlen_bf16(ctx(), dq.data() + 100 * 4 * 64, dk.data() + 100 * 2 * 64, dk.data() + 100 * 2 * 64,
                                one, 4, 2, 64, a.data(), ws);
    cuda::attention_varlen_bf16(ctx(), dq.data(), dk.data(), dk.data(), three, 4, 2, 64, b.data(), ws);
    const auto ha = cuda::to_host(ctx(), a.data(), 300 * 4 * 64);
    const auto hb = cuda::to_host(ctx(), b.data() + 100 * 4 * 64, 300 * 4 * 64);
    EXPECT_EQ(ha, hb);
  }
  cuda::DeviceBuffer<float> buf(std::size_t{4} * 96);
  const std::vector<int64_t> offs{0, 1};
  EXPECT_THROW(cuda::attention_varlen_bf16(ctx(), buf.data(), buf.data(), buf.data(), offs, 4, 2, 96, buf.data(), ws),
               Unsupported);
  const std::vector<int64_t> bad{0, 5, 3};
  EXPECT_THROW(cuda::attention_varlen_bf16(ctx(), buf.data(), buf.data(), buf.data(), bad, 4, 2, 64, buf.data(), ws),
               InvalidInput);
}

}  // namespace
}  // namespace angelslim
