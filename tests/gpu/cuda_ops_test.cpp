// Parity of every CUDA op (include/angelslim/backend/cuda_ops.h) with the CPU reference ops or a CPU computation
// typed again here, on random non-zero inputs and odd/boundary shapes; outputs start NaN-poisoned between guards.
// Tolerances (relative L2 unless "exact"): fp32 GEMMs 1e-5 (fp32 sums in another order; measured ~1e-7), bf16-input
// GEMM 5e-5 (tensor-core fp32 accumulation), fp32 elementwise 1e-6..1e-5 (cosf/expf within 2 ulp of glibc);
// bf16-mode results at most 1-2 bf16 ulps apart on at most 1-2% of elements (a fp32 ulp moving a rounding edge);
// conversions, fp8, abs-max, routing indices, lists, gather/scatter exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <set>
#include <string>

#include "angelslim/ops/cpu_ops.h"
#include "gpu/gpu_test_util.h"

namespace angelslim {
namespace {

using gputest::compare;
using gputest::ctx;
using gputest::Guarded;
using gputest::random_vec;

template <class T>
cuda::DeviceBuffer<T> dev(const std::vector<T>& v) {
  return cuda::to_device(ctx(), v);
}

std::string name_of(const char* op, std::initializer_list<int64_t> dims, const std::string& extra = "") {
  std::string s = std::string(op) + " [";
  for (auto it = dims.begin(); it != dims.end(); ++it) s += (it == dims.begin() ? "" : ",") + std::to_string(*it);
  return s + "]" + (extra.empty() ? "" : " " + extra);
}

template <class T>
int64_t count_diff(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return static_cast<int64_t>(std::max(a.size(), b.size()));
  int64_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

// ------------------------------------------------------------------------------------------------- harness

// Every op declared after the "ops" marker of cuda_ops.h must have a GPU_OP_TEST (test-backend-ops idea).
TEST(CudaOpsHarness, EveryOpHasATest) {
  const std::string path = std::string(ANGELSLIM_SOURCE_DIR) + "/include/angelslim/backend/cuda_ops.h";
  std::ifstream f(path);
  ASSERT_TRUE(f.good()) << "cannot read " << path;
  // A declaration line: "<void|int|float|bool> <name>(CudaContext& ...".
  std::set<std::string> ops;
  bool in_ops = false;
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("// ----", 0) == 0 && line.find(" ops") != std::string::npos) in_ops = true;
    if (!in_ops) continue;
    for (const std::string type : {"void ", "int ", "float ", "bool "}) {
      if (line.rfind(type, 0) != 0) continue;
      const auto paren = line.find("(CudaContext&", type.size());
      if (paren == std::string::npos) continue;
      const std::string name = line.substr(type.size(), paren - type.size());
      if (!name.empty() && name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos)
        ops.insert(name);
    }
  }
  EXPECT_GE(ops.size(), 20u) << "the declaration parser found too few ops in " << path;
  for (const auto& op : ops)
    EXPECT_TRUE(gputest::covered_ops().count(op)) << "cuda_ops.h declares " << op << " but no GPU_OP_TEST covers it";
  for (const auto& op : gputest::covered_ops())
    EXPECT_TRUE(ops.count(op)) << "GPU_OP_TEST names " << op << ", which cuda_ops.h does not declare";
}

TEST(CudaOpsHarness, ContextRequiresADevice) {
  const int n = cuda::device_count();
  EXPECT_GE(n, 0);
  EXPECT_THROW(cuda::CudaContext bad(n), Unsupported);  // one past the last device (device 0 when there is none)
}

// ------------------------------------------------------------------------------------------------- GEMMs

struct LinShape {
  int64_t t, k, o;
};
constexpr LinShape kLinShapes[] = {{1, 64, 96}, {127, 129, 128}, {128, 256, 384}, {129, 100, 33}, {300, 1024, 257}};

GPU_OP_TEST(linear, MatchesCpuSgemm) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 100;
  for (const auto& s : kLinShapes)
    for (bool with_bias : {false, true})
      for (float beta : {0.0f, 1.0f}) {
        const auto x = random_vec(s.t * s.k, seed++), w = random_vec(s.o * s.k, seed++);
        const auto b = random_vec(s.o, seed++), y0 = random_vec(s.t * s.o, seed++);
        auto ref = y0;
        cpu::linear(x.data(), s.t, s.k, w.data(), s.o, with_bias ? b.data() : nullptr, ref.data(), beta);
        auto dx = dev(x), dw = dev(w), db = dev(b);
        Guarded<float> y = beta == 0.0f ? Guarded<float>(ref.size()) : Guarded<float>(y0);
        cuda::linear(ctx(), dx.data(), s.t, s.k, dw.data(), s.o, with_bias ? db.data() : nullptr, y.data(), beta);
        const auto what = name_of("linear", {s.t, s.k, s.o}, fmt::format("bias={} beta={}", with_bias, beta));
        EXPECT_CLOSE(what, compare(y.read(), ref), 1e-5);
        EXPECT_TRUE(y.guards_intact()) << what;
      }
}

GPU_OP_TEST(linear_bf16, MatchesCpuSgemmOnBf16Values) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 200;
  for (const auto& s : kLinShapes)
    for (bool with_bias : {false, true})
      for (float alpha : {1.0f, 0.37f})
        for (float beta : {0.0f, 1.0f}) {
          const auto x = random_vec(s.t * s.k, seed++, -1, 1, true), w = random_vec(s.o * s.k, seed++, -1, 1, true);
          const auto b = random_vec(s.o, seed++), y0 = random_vec(s.t * s.o, seed++);
          std::vector<float> acc(y0.size());
          cpu::linear(x.data(), s.t, s.k, w.data(), s.o, nullptr, acc.data());
          std::vector<float> ref(acc.size());
          for (std::size_t i = 0; i < ref.size(); ++i)
            ref[i] = static_cast<float>(double(alpha) * acc[i] + double(beta) * y0[i] +
                                        (with_bias ? double(b[i % s.o]) : 0.0));
          std::vector<uint16_t> x16(x.size()), w16(w.size());
          for (std::size_t i = 0; i < x.size(); ++i) x16[i] = f32_to_bf16(x[i]);
          for (std::size_t i = 0; i < w.size(); ++i) w16[i] = f32_to_bf16(w[i]);
          auto dx = dev(x16), dw = dev(w16);
          auto db = dev(b);
          Guarded<float> y = beta == 0.0f ? Guarded<float>(ref.size()) : Guarded<float>(y0);
          cuda::linear_bf16(ctx(), dx.data(), s.t, s.k, dw.data(), s.o, with_bias ? db.data() : nullptr, y.data(),
                            alpha, beta);
          const auto what =
              name_of("linear_bf16", {s.t, s.k, s.o}, fmt::format("bias={} alpha={} beta={}", with_bias, alpha, beta));
          EXPECT_CLOSE(what, compare(y.read(), ref), 5e-5);
          EXPECT_TRUE(y.guards_intact()) << what;
        }
}

GPU_OP_TEST(bias_scale, ExactEpilogue) {
  ANGELSLIM_REQUIRE_GPU();
  const int64_t t = 129, o = 257;
  uint64_t seed = 300;
  for (bool rb : {false, true})
    for (bool with_scale : {false, true})
      for (bool with_bias : {false, true}) {
        const auto y0 = random_vec(t * o, seed++, -4, 4), b = random_vec(o, seed++);
        const float s = 0.0371f;
        std::vector<float> ref(y0.size());
        for (std::size_t i = 0; i < ref.size(); ++i) {
          // volatile: the product is rounded to float before the sum, as in the kernel (no FMA contraction here).
          volatile float v = with_scale ? y0[i] * s : y0[i];
          if (with_bias) v = v + b[i % o];
          ref[i] = rb ? round_bf16(v) : v;
        }
        auto db = dev(b);
        auto ds = dev(std::vector<float>{s});
        Guarded<float> y(y0);
        cuda::bias_scale(ctx(), y.data(), t, o, with_scale ? ds.data() : nullptr, with_bias ? db.data() : nullptr, rb);
        const auto what =
            name_of("bias_scale", {t, o}, fmt::format("scale={} bias={} rb={}", with_scale, with_bias, rb));
        EXPECT_EXACT(what, compare(y.read(), ref));
        EXPECT_TRUE(y.guards_intact()) << what;
      }
}

// ------------------------------------------------------------------------------------------------- norms, RoPE

GPU_OP_TEST(rms_norm, MatchesCpu) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 400;
  for (int64_t rows : {1, 127, 128, 129})
    for (int64_t n : {64, 128, 1024, 1536, 4096})
      for (bool rb : {false, true}) {
        const auto x = random_vec(rows * n, seed++, -2, 2, rb);
        auto w = random_vec(n, seed++, 0.8f, 1.2f, rb);
        std::vector<float> ref(x.size());
        cpu::rms_norm(x.data(), rows, n, w.data(), 1e-5f, ref.data(), rb);
        auto dx = dev(x), dw = dev(w);
        Guarded<float> y(x.size());
        cuda::rms_norm(ctx(), dx.data(), rows, n, dw.data(), 1e-5f, y.data(), rb);
        const auto what = name_of("rms_norm", {rows, n}, fmt::format("rb={}", rb));
        if (rb)
          EXPECT_BF16_NEAR(what, compare(y.read(), ref), 2.0, 0.01);
        else
          EXPECT_CLOSE(what, compare(y.read(), ref), 1e-5);
        EXPECT_TRUE(y.guards_intact()) << what;
      }
  // In place (the QK-norm use).
  const auto x = random_vec(std::size_t{129} * 64, 499, -2, 2);
  const auto w = random_vec(64, 498, 0.8f, 1.2f);
  std::vector<float> ref(x.size());
  cpu::rms_norm(x.data(), 129, 64, w.data(), 1e-6f, ref.data(), false);
  Guarded<float> y(x);
  auto dw = dev(w);
  cuda::rms_norm(ctx(), y.data(), 129, 64, dw.data(), 1e-6f, y.data(), false);
  EXPECT_CLOSE("rms_norm [129,64] in place", compare(y.read(), ref), 1e-5);
  EXPECT_TRUE(y.guards_intact());
}

std::vector<float> ntk_inv_freq(int64_t head_dim) {
  // SPEC 3.3 base for theta 1e4, alpha 1000: D=64 -> 12496091, D=128 -> 11158840.
  const float base = head_dim == 64 ? 12496091.0f : 11158840.0f;
  std::vector<float> inv(static_cast<std::size_t>(head_dim / 2));
  for (int64_t j = 0; j < head_dim / 2; ++j)
    inv[j] = 1.0f / std::pow(base, static_cast<float>(2 * j) / static_cast<float>(head_dim));
  return inv;
}

GPU_OP_TEST(rope, MatchesCpu) {
  ANGELSLIM_REQUIRE_GPU();
  struct Case {
    int64_t t, h, d, pos0;
  };
  const Case cases[] = {{1, 1, 64, 0}, {127, 3, 64, 1000}, {129, 16, 128, 8000}, {128, 8, 128, 0}, {1, 8, 128, 8191}};
  uint64_t seed = 500;
  for (const auto& c : cases)
    for (bool rb : {false, true}) {
      const auto x = random_vec(c.t * c.h * c.d, seed++, -2, 2, rb);
      const auto inv = ntk_inv_freq(c.d);
      auto ref = x;
      cpu::rope(ref.data(), c.t, c.h, c.d, inv.data(), c.pos0, rb);
      auto dinv = dev(inv);
      Guarded<float> y(x);
      cuda::rope(ctx(), y.data(), c.t, c.h, c.d, dinv.data(), c.pos0, rb);
      const auto what = name_of("rope", {c.t, c.h, c.d}, fmt::format("pos0={} rb={}", c.pos0, rb));
      const auto st = compare(y.read(), ref);
      if (rb) {
        EXPECT_CLOSE(what, st, 2e-3);
        EXPECT_LE(static_cast<double>(st.n_diff), 0.02 * static_cast<double>(st.n)) << what;
      } else {
        EXPECT_CLOSE(what, st, 5e-6);
      }
      EXPECT_TRUE(y.guards_intact()) << what;
    }
}

// ------------------------------------------------------------------------------------------------- attention

struct AttnCase {
  int64_t n_q, n_past, nh, nkv, d;
};

void check_attention(const AttnCase& c, bool rb, uint64_t seed, double tol) {
  const int64_t n_k = c.n_past + c.n_q;
  const auto q = random_vec(c.n_q * c.nh * c.d, seed, -1.5f, 1.5f, rb);
  const auto k = random_vec(n_k * c.nkv * c.d, seed + 1, -1.5f, 1.5f, rb);
  const auto v = random_vec(n_k * c.nkv * c.d, seed + 2, -1.0f, 1.0f, rb);
  std::vector<float> ref(q.size());
  cpu::attention(q.data(), k.data(), v.data(), c.n_q, c.n_past, c.nh, c.nkv, c.d, ref.data(), rb);
  auto dq = dev(q), dk = dev(k), dv = dev(v);
  Guarded<float> out(q.size());
  cuda::attention(ctx(), dq.data(), dk.data(), dv.data(), c.n_q, c.n_past, c.nh, c.nkv, c.d, out.data(), rb);
  const auto what =
      name_of("attention", {c.n_q, c.n_past, c.nh, c.nkv, c.d}, fmt::format("(n_q,n_past,nH,nKV,D) rb={}", rb));
  EXPECT_CLOSE(what, compare(out.read(), ref), tol);
  EXPECT_TRUE(out.guards_intact()) << what;
}

GPU_OP_TEST(attention, MatchesCpuOnBoundaryShapes) {
  ANGELSLIM_REQUIRE_GPU();
  const AttnCase cases[] = {{1, 0, 4, 2, 64},     {1, 37, 6, 2, 64},     {127, 0, 6, 2, 64}, {128, 0, 4, 4, 128},
                            {129, 5, 16, 8, 128}, {300, 200, 8, 1, 128}, {64, 64, 2, 2, 64}, {65, 0, 1, 1, 128}};
  uint64_t seed = 600;
  for (const auto& c : cases)
    for (bool rb : {false, true}) {
      check_attention(c, rb, seed, rb ? 3e-3 : 1e-5);
      seed += 3;
    }
}

// 8192 keys: the tiled kernel never holds a score matrix; also the n_past path at that length.
GPU_OP_TEST(attention, LongSequence8192) {
  ANGELSLIM_REQUIRE_GPU();
  check_attention({8192, 0, 2, 1, 128}, false, 700, 1e-5);
  check_attention({4000, 4192, 2, 2, 64}, true, 710, 3e-3);
}

GPU_OP_TEST(attention, RejectsUnsupportedHeadDim) {
  ANGELSLIM_REQUIRE_GPU();
  cuda::DeviceBuffer<float> b(std::size_t{4} * 96);
  EXPECT_THROW(cuda::attention(ctx(), b.data(), b.data(), b.data(), 1, 0, 4, 2, 96, b.data(), false), Unsupported);
  EXPECT_THROW(cuda::attention(ctx(), b.data(), b.data(), b.data(), 1, 0, 3, 2, 64, b.data(), false), InvalidInput);
}

// ------------------------------------------------------------------------------------------------- elementwise

GPU_OP_TEST(swiglu, MatchesCpu) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 800;
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{(1 << 20) + 7}})
    for (bool rb : {false, true}) {
      const auto g = random_vec(n, seed++, -8, 8, rb), u = random_vec(n, seed++, -2, 2, rb);
      std::vector<float> ref(g.size());
      cpu::swiglu(g.data(), u.data(), ref.data(), n, rb);
      auto dg = dev(g), du = dev(u);
      Guarded<float> out(g.size());
      cuda::swiglu(ctx(), dg.data(), du.data(), out.data(), n, rb);
      const auto what = name_of("swiglu", {n}, fmt::format("rb={}", rb));
      if (rb)
        EXPECT_BF16_NEAR(what, compare(out.read(), ref), 1.0, 0.01);
      else
        EXPECT_CLOSE(what, compare(out.read(), ref), 1e-6);
      EXPECT_TRUE(out.guards_intact()) << what;
    }
  // Aliased output (out == gate), as the layer uses it.
  const auto g = random_vec(4097, 890, -8, 8), u = random_vec(4097, 891, -2, 2);
  std::vector<float> ref(g.size());
  cpu::swiglu(g.data(), u.data(), ref.data(), 4097, false);
  Guarded<float> gg(g);
  auto du = dev(u);
  cuda::swiglu(ctx(), gg.data(), du.data(), gg.data(), 4097, false);
  EXPECT_CLOSE("swiglu [4097] out==gate", compare(gg.read(), ref), 1e-6);
}

GPU_OP_TEST(add, Exact) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 900;
  for (int64_t n : {int64_t{1}, int64_t{129}, int64_t{(1 << 20) + 3}})
    for (bool rb : {false, true}) {
      const auto a = random_vec(n, seed++, -3, 3, rb), b = random_vec(n, seed++, -3, 3, rb);
      std::vector<float> ref(a.size());
      for (std::size_t i = 0; i < ref.size(); ++i) ref[i] = rb ? round_bf16(a[i] + b[i]) : a[i] + b[i];
      Guarded<float> out(a);  // out aliases a, as in the residual update x += o
      auto db = dev(b);
      cuda::add(ctx(), out.data(), db.data(), out.data(), n, rb);
      const auto what = name_of("add", {n}, fmt::format("rb={}", rb));
      EXPECT_EXACT(what, compare(out.read(), ref));
      EXPECT_TRUE(out.guards_intact()) << what;
    }
}

// Random values plus the cases rounding gets wrong: exact ties (low half 0x8000), ±0, ±inf, NaN, subnormals, values
// that round up to inf.
std::vector<float> rounding_cases(uint64_t seed) {
  auto v = random_vec(100000, seed, -1000, 1000);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (int i = 0; i < 5000; ++i) v.push_back(bits_to_f32((rng() & 0xffff0000u) | 0x8000u));
  for (uint32_t b : {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0x00012345u,
                     0x80000001u, 0x7f7fffffu, 0xff7fffffu, 0x3f808000u, 0x3f818000u})
    v.push_back(bits_to_f32(b));
  return v;
}

GPU_OP_TEST(round_bf16_inplace, ExactIncludingTiesAndSpecials) {
  ANGELSLIM_REQUIRE_GPU();
  const auto x = rounding_cases(1000);
  std::vector<float> ref(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) ref[i] = round_bf16(x[i]);
  Guarded<float> y(x);
  cuda::round_bf16_inplace(ctx(), y.data(), static_cast<int64_t>(x.size()));
  const auto got = y.read();
  int64_t diff = 0;
  for (std::size_t i = 0; i < x.size(); ++i) diff += f32_to_bits(got[i]) != f32_to_bits(ref[i]);
  gputest::report(name_of("round_bf16_inplace", {static_cast<int64_t>(x.size())}), compare(got, ref));
  EXPECT_EQ(diff, 0);
  EXPECT_TRUE(y.guards_intact());
}

GPU_OP_TEST(f32_to_bf16, ExactIncludingTiesAndSpecials) {
  ANGELSLIM_REQUIRE_GPU();
  const auto x = rounding_cases(1100);
  std::vector<uint16_t> ref(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) ref[i] = f32_to_bf16(x[i]);
  auto dx = dev(x);
  Guarded<uint16_t> y(x.size());
  cuda::f32_to_bf16(ctx(), dx.data(), y.data(), static_cast<int64_t>(x.size()));
  const auto got = y.read();
  std::printf("[gpu-parity] f32_to_bf16 [%zu] bit mismatches=%lld\n", x.size(),
              static_cast<long long>(count_diff(got, ref)));
  EXPECT_EQ(count_diff(got, ref), 0);
  EXPECT_TRUE(y.guards_intact());
}

GPU_OP_TEST(bf16_to_f32, ExactAllBitPatterns) {
  ANGELSLIM_REQUIRE_GPU();
  std::vector<uint16_t> x(65536);
  std::iota(x.begin(), x.end(), uint16_t{0});
  std::vector<float> ref(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) ref[i] = bf16_to_f32(x[i]);
  auto dx = dev(x);
  Guarded<float> y(x.size());
  cuda::bf16_to_f32(ctx(), dx.data(), y.data(), 65536);
  const auto got = y.read();
  int64_t diff = 0;
  for (std::size_t i = 0; i < x.size(); ++i) diff += f32_to_bits(got[i]) != f32_to_bits(ref[i]);
  std::printf("[gpu-parity] bf16_to_f32 [65536 patterns] bit mismatches=%lld\n", static_cast<long long>(diff));
  EXPECT_EQ(diff, 0);
  EXPECT_TRUE(y.guards_intact());
}

// ------------------------------------------------------------------------------------------------- fp8

// x/s over the whole e4m3 range: saturation (|x/s| > 448), subnormals (|x/s| < 2^-6), and, for a power-of-two
// scale, exact midpoints between neighbouring codes (ties to even).
std::vector<float> fp8_cases(float s, uint64_t seed) {
  auto v = random_vec(50000, seed, -600.0f * s, 600.0f * s);
  const auto small = random_vec(5000, seed + 1, -0.03f * s, 0.03f * s);
  v.insert(v.end(), small.begin(), small.end());
  for (int c = 0; c < 0x7e; ++c) {
    const float mid = 0.5f * (fp8e4m3_to_f32(static_cast<uint8_t>(c)) + fp8e4m3_to_f32(static_cast<uint8_t>(c + 1)));
    v.push_back(mid * s);
    v.push_back(-mid * s);
  }
  v.push_back(1e30f);
  v.push_back(-1e30f);
  return v;
}

GPU_OP_TEST(fake_quant_fp8, ExactVsCpuE4m3) {
  ANGELSLIM_REQUIRE_GPU();
  for (float s : {0.25f, 0.0123f, 3.7e-3f}) {
    const auto x = fp8_cases(s, 1200 + static_cast<uint64_t>(s * 1e4f));
    std::vector<float> ref(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) ref[i] = round_fp8e4m3(x[i] / s) * s;
    auto dx = dev(x);
    auto ds = dev(std::vector<float>{s});
    Guarded<float> y(x.size());
    cuda::fake_quant_fp8(ctx(), dx.data(), static_cast<int64_t>(x.size()), ds.data(), y.data());
    const auto what = name_of("fake_quant_fp8", {static_cast<int64_t>(x.size())}, fmt::format("scale={}", s));
    EXPECT_EXACT(what, compare(y.read(), ref));
    EXPECT_TRUE(y.guards_intact()) << what;
  }
}

GPU_OP_TEST(quant_fp8_bf16, ExactCodes) {
  ANGELSLIM_REQUIRE_GPU();
  for (float s : {0.25f, 0.0123f}) {
    const auto x = fp8_cases(s, 1300 + static_cast<uint64_t>(s * 1e4f));
    std::vector<uint16_t> ref(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) ref[i] = f32_to_bf16(round_fp8e4m3(x[i] / s));
    auto dx = dev(x);
    auto ds = dev(std::vector<float>{s});
    Guarded<uint16_t> q(x.size());
    cuda::quant_fp8_bf16(ctx(), dx.data(), static_cast<int64_t>(x.size()), ds.data(), q.data());
    const auto got = q.read();
    std::printf("[gpu-parity] quant_fp8_bf16 [%zu] scale=%g mismatches=%lld\n", x.size(), s,
                static_cast<long long>(count_diff(got, ref)));
    EXPECT_EQ(count_diff(got, ref), 0);
    EXPECT_TRUE(q.guards_intact());
  }
}

GPU_OP_TEST(abs_max, Exact) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 1400;
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1000}, int64_t{(1 << 22) + 5}}) {
    auto x = random_vec(static_cast<std::size_t>(n), seed++, -5, 5);
    if (n > 10) x[static_cast<std::size_t>(n / 3)] = -7.25f;  // the maximum, negative, somewhere inside
    float ref = 0.0f;
    for (float v : x) ref = std::max(ref, std::fabs(v));
    auto dx = dev(x);
    Guarded<float> out(1);
    cuda::abs_max(ctx(), dx.data(), n, out.data());
    const auto got = out.read();
    std::printf("[gpu-parity] abs_max [%lld] got=%.9g ref=%.9g\n", static_cast<long long>(n), got[0], ref);
    EXPECT_EQ(f32_to_bits(got[0]), f32_to_bits(ref)) << "n=" << n;
    EXPECT_TRUE(out.guards_intact());
  }
}

GPU_OP_TEST(abs_max_columns, Exact) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 1500;
  for (int64_t rows : {0, 1, 129, 5000})
    for (int64_t cols : {1, 33, 896}) {
      const auto x = random_vec(static_cast<std::size_t>(rows * cols), seed++, -5, 5);
      std::vector<float> ref(static_cast<std::size_t>(cols), 0.0f);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) ref[c] = std::max(ref[c], std::fabs(x[r * cols + c]));
      auto dx = dev(x);
      Guarded<float> out(ref.size());
      cuda::abs_max_columns(ctx(), dx.data(), rows, cols, out.data());
      const auto what = name_of("abs_max_columns", {rows, cols});
      EXPECT_EXACT(what, compare(out.read(), ref));
      EXPECT_TRUE(out.guards_intact()) << what;
    }
}

GPU_OP_TEST(fp8_scale_from_amax, Exact) {
  ANGELSLIM_REQUIRE_GPU();
  for (float amax : {0.0f, 1e-20f, 3.7f, 448.0f, 1e5f}) {
    const float ref = std::max(amax, 1e-12f) / kFp8E4M3Max;
    auto da = dev(std::vector<float>{amax});
    Guarded<float> s(1);
    cuda::fp8_scale_from_amax(ctx(), da.data(), s.data());
    EXPECT_EQ(f32_to_bits(s.read()[0]), f32_to_bits(ref)) << "amax=" << amax;
    EXPECT_TRUE(s.guards_intact());
  }
}

// ------------------------------------------------------------------------------------------------- MoE

// The CPU router of src/model/hunyuan.cpp (SPEC 3.6), typed again: softmax, stable sort (lower index first on
// exact ties), renormalised top-k weights, bf16-rounded in bf16 mode.
void cpu_route(std::vector<float>& logits, int64_t n, int64_t E, int64_t k, std::vector<int32_t>& top,
               std::vector<float>& wts, bool rb) {
  top.assign(static_cast<std::size_t>(n * k), 0);
  wts.assign(top.size(), 0.0f);
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
    for (int64_t i = 0; i < k; ++i) tsum += r[order[i]];
    for (int64_t i = 0; i < k; ++i) {
      top[t * k + i] = order[i];
      const float w = r[order[i]] / tsum;
      wts[t * k + i] = rb ? round_bf16(w) : w;
    }
  }
}

GPU_OP_TEST(moe_route, MatchesCpuIncludingTies) {
  ANGELSLIM_REQUIRE_GPU();
  struct Case {
    int64_t n, E, k;
  };
  const Case cases[] = {{1, 8, 2}, {127, 8, 2}, {1000, 64, 8}, {129, 256, 8}, {50, 16, 1}, {33, 4, 4}};
  uint64_t seed = 1600;
  for (const auto& c : cases)
    for (bool rb : {false, true}) {
      // Logits 0.05 apart in a random order per token (no near-ties that fp32 noise could flip), plus rows with
      // exact ties: all equal, and every third expert equal.
      std::mt19937_64 rng(seed++);
      std::uniform_real_distribution<float> off(-3.0f, 3.0f);
      std::vector<float> logits(static_cast<std::size_t>(c.n * c.E));
      std::vector<int32_t> perm(static_cast<std::size_t>(c.E));
      for (int64_t t = 0; t < c.n; ++t) {
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng);
        const float o = off(rng);
        for (int64_t e = 0; e < c.E; ++e) {
          float v = 0.05f * static_cast<float>(perm[e]) + o;
          if (t % 7 == 3) v = 0.5f;
          if (t % 7 == 5) v = (e % 3 == 0) ? 1.25f : -0.5f;
          logits[t * c.E + e] = v;
        }
      }
      auto probs = logits;
      std::vector<int32_t> top;
      std::vector<float> wts;
      cpu_route(probs, c.n, c.E, c.k, top, wts, rb);
      Guarded<float> dl(logits);
      Guarded<int32_t> dtop(top.size());
      Guarded<float> dw(wts.size());
      cuda::moe_route(ctx(), dl.data(), c.n, c.E, c.k, dtop.data(), dw.data(), rb);
      const auto what = name_of("moe_route", {c.n, c.E, c.k}, fmt::format("(n,E,k) rb={}", rb));
      const auto got_top = dtop.read();
      std::printf("[gpu-parity] %s expert mismatches=%lld\n", what.c_str(),
                  static_cast<long long>(count_diff(got_top, top)));
      EXPECT_EQ(count_diff(got_top, top), 0) << what;
      EXPECT_CLOSE(what + " probabilities", compare(dl.read(), probs), 1e-6);
      if (rb)
        EXPECT_BF16_NEAR(what + " weights", compare(dw.read(), wts), 1.0, 0.02);
      else
        EXPECT_CLOSE(what + " weights", compare(dw.read(), wts), 1e-6);
      EXPECT_TRUE(dl.guards_intact() && dtop.guards_intact() && dw.guards_intact()) << what;
    }
}

GPU_OP_TEST(moe_expert_lists, ExactAndOrderedWithAnEmptyExpert) {
  ANGELSLIM_REQUIRE_GPU();
  struct Case {
    int64_t n, E, k;
  };
  const Case cases[] = {{1, 8, 2}, {127, 8, 2}, {3000, 64, 8}, {129, 16, 1}};
  uint64_t seed = 1700;
  for (const auto& c : cases) {
    std::mt19937_64 rng(seed++);
    std::vector<int32_t> experts(static_cast<std::size_t>(c.n * c.k));
    std::vector<int32_t> pool(static_cast<std::size_t>(c.E - 1));  // expert E-1 never chosen: zero tokens
    for (int64_t t = 0; t < c.n; ++t) {
      std::iota(pool.begin(), pool.end(), 0);
      std::shuffle(pool.begin(), pool.end(), rng);
      for (int64_t i = 0; i < c.k; ++i) experts[t * c.k + i] = pool[i];
    }
    const auto weights = random_vec(experts.size(), seed++, 0.01f, 1.0f);
    std::vector<int64_t> off(static_cast<std::size_t>(c.E + 1), 0), tok;
    std::vector<float> sw;
    for (int64_t e = 0; e < c.E; ++e) {
      for (int64_t t = 0; t < c.n; ++t)
        for (int64_t i = 0; i < c.k; ++i)
          if (experts[t * c.k + i] == e) {
            tok.push_back(t);
            sw.push_back(weights[t * c.k + i]);
          }
      off[e + 1] = static_cast<int64_t>(tok.size());
    }
    auto de = dev(experts);
    auto dw = dev(weights);
    Guarded<int64_t> doff(off.size()), dtok(tok.size());
    Guarded<float> dsw(sw.size());
    cuda::moe_expert_lists(ctx(), de.data(), dw.data(), c.n, c.k, c.E, doff.data(), dtok.data(), dsw.data());
    const auto what = name_of("moe_expert_lists", {c.n, c.E, c.k}, "(n,E,k)");
    const auto got_off = doff.read(), got_tok = dtok.read();
    std::printf("[gpu-parity] %s offset mismatches=%lld token mismatches=%lld\n", what.c_str(),
                static_cast<long long>(count_diff(got_off, off)), static_cast<long long>(count_diff(got_tok, tok)));
    EXPECT_EQ(count_diff(got_off, off), 0) << what;
    EXPECT_EQ(got_off[c.E] - got_off[c.E - 1], 0) << what << ": the unused expert must have an empty range";
    EXPECT_EQ(count_diff(got_tok, tok), 0) << what;
    EXPECT_EXACT(what + " weights", compare(dsw.read(), sw));
    EXPECT_TRUE(doff.guards_intact() && dtok.guards_intact() && dsw.guards_intact()) << what;
  }
}

GPU_OP_TEST(gather_rows, Exact) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 1800;
  for (int64_t d : {1, 33, 1024})
    for (int64_t m : {1, 129}) {
      const int64_t rows = 50;
      const auto x = random_vec(static_cast<std::size_t>(rows * d), seed++);
      std::mt19937_64 rng(seed++);
      std::vector<int64_t> idx(static_cast<std::size_t>(m));
      for (auto& i : idx) i = static_cast<int64_t>(rng() % rows);
      std::vector<float> ref(static_cast<std::size_t>(m * d));
      for (int64_t i = 0; i < m; ++i)
        std::copy(x.begin() + idx[i] * d, x.begin() + (idx[i] + 1) * d, ref.begin() + i * d);
      auto dx = dev(x);
      auto di = dev(idx);
      Guarded<float> out(ref.size());
      cuda::gather_rows(ctx(), dx.data(), d, di.data(), m, out.data());
      const auto what = name_of("gather_rows", {m, d});
      EXPECT_EXACT(what, compare(out.read(), ref));
      EXPECT_TRUE(out.guards_intact()) << what;
    }
}

GPU_OP_TEST(scatter_add_rows, Exact) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 1900;
  for (int64_t d : {1, 33, 1024})
    for (bool rb : {false, true})
      for (bool with_w : {false, true}) {
        const int64_t rows = 200, m = 129;
        const auto out0 = random_vec(static_cast<std::size_t>(rows * d), seed++, -1, 1, rb);
        const auto y = random_vec(static_cast<std::size_t>(m * d), seed++, -1, 1, rb);
        const auto w = random_vec(static_cast<std::size_t>(m), seed++, 0.01f, 1.0f, rb);
        std::vector<int64_t> perm(static_cast<std::size_t>(rows));
        std::iota(perm.begin(), perm.end(), 0);
        std::mt19937_64 rng(seed++);
        std::shuffle(perm.begin(), perm.end(), rng);
        const std::vector<int64_t> idx(perm.begin(), perm.begin() + m);  // distinct rows
        auto ref = out0;
        for (int64_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < d; ++c) {
            const float p = with_w ? w[i] * y[i * d + c] : y[i * d + c];
            ref[idx[i] * d + c] += rb ? round_bf16(p) : p;
          }
        auto dy = dev(y);
        auto di = dev(idx);
        auto dw = dev(w);
        Guarded<float> out(out0);
        cuda::scatter_add_rows(ctx(), dy.data(), d, di.data(), with_w ? dw.data() : nullptr, m, out.data(), rb);
        const auto what = name_of("scatter_add_rows", {m, d}, fmt::format("weights={} rb={}", with_w, rb));
        EXPECT_EXACT(what, compare(out.read(), ref));
        EXPECT_TRUE(out.guards_intact()) << what;
      }
}

// ------------------------------------------------------------------------------------------------- Hessian

GPU_OP_TEST(hessian_accumulate, MatchesFp64AndStaysSymmetric) {
  ANGELSLIM_REQUIRE_GPU();
  uint64_t seed = 2000;
  for (int64_t n : {1, 129, 1000})
    for (int64_t k : {1, 33, 128, 512}) {
      const auto x = random_vec(static_cast<std::size_t>(n * k), seed++, -2, 2);
      const auto a = random_vec(static_cast<std::size_t>(k * k), seed++);
      std::vector<float> h0(a.size());
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) h0[i * k + j] = 0.5f * (a[i * k + j] + a[j * k + i]);
      const float alpha = 2.0f / static_cast<float>(n);
      std::vector<float> ref(h0.size());
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) {
          double s = 0.0;
          for (int64_t t = 0; t < n; ++t) s += double(x[t * k + i]) * x[t * k + j];
          ref[i * k + j] = static_cast<float>(h0[i * k + j] + double(alpha) * s);
        }
      auto dx = dev(x);
      Guarded<float> h(h0);
      cuda::hessian_accumulate(ctx(), dx.data(), n, k, alpha, h.data());
      const auto got = h.read();
      const auto what = name_of("hessian_accumulate", {n, k});
      EXPECT_CLOSE(what, compare(got, ref), 1e-5);
      int64_t asym = 0;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < i; ++j) asym += f32_to_bits(got[i * k + j]) != f32_to_bits(got[j * k + i]);
      EXPECT_EQ(asym, 0) << what << ": not exactly symmetric";
      EXPECT_TRUE(h.guards_intact()) << what;
    }
}

}  // namespace
}  // namespace angelslim
