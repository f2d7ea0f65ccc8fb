// FP8 weight quantization on the GPU (src/backend/cuda/fp8_weights.h) against the CPU (quant/fp8_weight.h):
//   - the device e4m3 conversion equals f32_to_fp8e4m3 for every float of magnitude in [2^-12, 2^10) (all rounding
//     and saturation cases: subnormal codes, ties, the rounding into the next binade, values past 448), plus NaN,
//     ±Inf, ±0 and 2^24 random bit patterns of the whole range;
//   - whole weights, fp32 or bf16 on the device, per tensor (scales shared by groups) and per channel, with wide
//     dynamic ranges (subnormal and zero codes), amax below the 1e-12 floor and odd shapes: identical bytes and
//     scales, relative error within 1e-6 of the CPU's FP64 value (only the summation order differs);
//   - a non-finite weight makes the device path decline (the host path reports it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>

#include "angelslim/core/parallel.h"
#include "angelslim/quant/fp8_weight.h"
#include "backend/cuda/fp8_kernels.h"
#include "backend/cuda/fp8_weights.h"
#include "gpu/gpu_test_util.h"

namespace angelslim {
namespace {

using gputest::ctx;

// Device codes of x (fp8_encode) and the number of mismatches against the CPU conversion (first one reported).
int64_t encode_mismatches(const std::vector<float>& x) {
  auto dx = cuda::to_device(ctx(), x);
  cuda::DeviceBuffer<uint8_t> dq(x.size());
  ANGELSLIM_CUDA_CHECK(cuda::kernels::fp8_encode(ctx().stream(), ctx().sm_count(), dx.data(),
                                                 static_cast<int64_t>(x.size()), dq.data()));
  const auto q = cuda::to_host(ctx(), dq.data(), x.size());
  constexpr int64_t kPieces = 64;
  std::vector<int64_t> bad(kPieces, 0), first(kPieces, -1);
  const auto n = static_cast<int64_t>(x.size());
  parallel_for(kPieces, [&](int64_t p) {
    for (int64_t i = p * n / kPieces; i < (p + 1) * n / kPieces; ++i)
      if (q[static_cast<std::size_t>(i)] != f32_to_fp8e4m3(x[static_cast<std::size_t>(i)])) {
        if (bad[static_cast<std::size_t>(p)]++ == 0) first[static_cast<std::size_t>(p)] = i;
      }
  });
  int64_t total = 0;
  for (int64_t p = 0; p < kPieces; ++p) {
    total += bad[static_cast<std::size_t>(p)];
    if (first[static_cast<std::size_t>(p)] >= 0 && total == bad[static_cast<std::size_t>(p)]) {
      const float v = x[static_cast<std::size_t>(first[static_cast<std::size_t>(p)])];
      ADD_FAILURE() << "e4m3(" << v << " = 0x" << std::hex << f32_to_bits(v) << "): device 0x"
                    << int{q[static_cast<std::size_t>(first[static_cast<std::size_t>(p)])]} << ", cpu 0x"
                    << int{f32_to_fp8e4m3(v)} << std::dec;
    }
  }
  return total;
}

TEST(CudaFp8, EncodeMatchesCpuConversion) {
  ANGELSLIM_REQUIRE_GPU();
  // Every float with biased exponent 115..136 (|x| in [2^-12, 2^10)), both signs, in chunks of 2^25.
  constexpr uint32_t kLo = 115u << 23, kHi = 137u << 23, kChunk = 1u << 25;
  int64_t checked = 0, bad = 0;
  std::vector<float> x;
  for (uint32_t sign : {0u, 0x80000000u})
    for (uint32_t b0 = kLo; b0 < kHi; b0 += kChunk) {
      const uint32_t m = std::min(kChunk, kHi - b0);
      x.resize(m);
      for (uint32_t i = 0; i < m; ++i) x[i] = bits_to_f32(sign | (b0 + i));
      bad += encode_mismatches(x);
      checked += m;
    }
  // Specials and random bit patterns over the whole range (NaNs, infinities, subnormals, huge values).
  x = {0.0f, -0.0f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
       std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
       std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::max(), 448.0f, 464.0f, 480.0f,
       -449.0f, 0.0009765625f, 0.0029296875f, 0.0146484375f, 0.01513671875f};
  std::mt19937 rng(7);
  for (int i = 0; i < (1 << 24); ++i) x.push_back(bits_to_f32(static_cast<uint32_t>(rng())));
  bad += encode_mismatches(x);
  checked += static_cast<int64_t>(x.size());
  std::printf("[gpu-fp8] e4m3 conversion: %lld inputs, %lld differ from the CPU\n", static_cast<long long>(checked),
              static_cast<long long>(bad));
  EXPECT_EQ(bad, 0);
}

struct Case {
  int rows, cols;
  int group;
  float lo, hi;  // weights: sign × 2^u, u uniform in [lo, hi) (never zero)
  bool bf16;     // held as bf16 bits on the device (values rounded to bf16 first)
};

std::vector<float> weights_for(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(c.lo, c.hi);
  std::vector<float> w(static_cast<std::size_t>(c.rows) * c.cols);
  for (auto& v : w) {
    do {
      v = std::exp2(u(rng)) * ((rng() & 1) ? -1.0f : 1.0f);
      if (c.bf16) v = round_bf16(v);
    } while (v == 0.0f || !std::isfinite(v));
  }
  return w;
}

TEST(CudaFp8, WeightsMatchCpuBitwise) {
  ANGELSLIM_REQUIRE_GPU();
  // Groups as the FP8 quantizer forms them (q/k/v share one scale, gate/up one), with mixed magnitudes in a group.
  const std::vector<Case> cases = {
      {64, 96, 0, -4.0f, 0.0f, true},      {32, 96, 0, -6.0f, 2.0f, true},     {32, 96, 0, -3.0f, -1.0f, true},
      {96, 64, 1, -20.0f, 0.0f, false},    {257, 513, 2, -10.0f, 5.0f, false}, {257, 513, 2, -2.0f, 1.0f, false},
      {1, 1, 3, -1.0f, 0.0f, false},       {3, 5, 4, -50.0f, -41.0f, false},  // amax < 1e-12: the floor
      {1024, 1536, 5, -8.0f, -1.0f, true}, {7, 4099, 6, -30.0f, 30.0f, false}, {2, 3, 7, -149.0f, -126.0f, false},
  };
  std::vector<std::vector<float>> w;
  std::vector<cuda::DeviceBuffer<float>> d32;
  std::vector<cuda::DeviceBuffer<uint16_t>> d16;
  std::vector<cuda::DeviceWeightsView> views;
  std::vector<int> group;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    w.push_back(weights_for(c, 100 + i));
    cuda::DeviceWeightsView v;
    v.rows = c.rows;
    v.cols = c.cols;
    if (c.bf16) {
      std::vector<uint16_t> h(w.back().size());
      for (std::size_t k = 0; k < h.size(); ++k) h[k] = f32_to_bf16(w.back()[k]);
      d16.push_back(cuda::to_device(ctx(), h));
      v.bf16 = d16.back().data();
    } else {
      d32.push_back(cuda::to_device(ctx(), w.back()));
      v.f32 = d32.back().data();
    }
    views.push_back(v);
    group.push_back(c.group);
  }
  cuda::Fp8WeightQuantizer q(ctx());
  for (const bool per_channel : {false, true}) {
    std::vector<Fp8Weight> got;
    std::vector<float> err;
    ASSERT_TRUE(q.quantize(views, group, per_channel, got, err));
    ASSERT_EQ(got.size(), cases.size());
    ASSERT_EQ(err.size(), cases.size());
    std::map<int, float> group_amax;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      float& g = group_amax[cases[i].group];
      g = std::max(g, abs_max(w[i]));
    }
    int64_t bytes = 0, bytes_diff = 0;
    double max_err_rel = 0.0;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      const Fp8Weight ref =
          per_channel ? quantize_fp8_per_channel(w[i], c.rows, c.cols)
                      : quantize_fp8_with_scales(w[i], c.rows, c.cols,
                                                 std::vector<float>{fp8_scale_from_amax(group_amax.at(c.group))});
      ASSERT_EQ(got[i].data.size(), ref.data.size());
      ASSERT_EQ(got[i].scale.size(), ref.scale.size()) << "case " << i;
      for (std::size_t k = 0; k < ref.scale.size(); ++k)
        EXPECT_EQ(f32_to_bits(got[i].scale[k]), f32_to_bits(ref.scale[k])) << "case " << i << " scale " << k;
      int64_t diff = 0;
      for (std::size_t k = 0; k < ref.data.size(); ++k) diff += got[i].data[k] != ref.data[k];
      EXPECT_EQ(diff, 0) << "case " << i << " (" << c.rows << "x" << c.cols << ", per_channel " << per_channel << ")";
      bytes += static_cast<int64_t>(ref.data.size());
      bytes_diff += diff;
      const float e = fp8_rel_error(w[i], dequantize_fp8(ref, c.rows, c.cols));
      const double rel = std::fabs(double(err[i]) - e) / std::max(double(e), 1e-30);
      max_err_rel = std::max(max_err_rel, rel);
      EXPECT_LE(rel, 1e-6) << "case " << i << ": err " << err[i] << " vs cpu " << e;
    }
    std::printf("[gpu-fp8] %s: %lld bytes, %lld differ; err_fro max relative difference %.3g\n",
                per_channel ? "per channel" : "per tensor", static_cast<long long>(bytes),
                static_cast<long long>(bytes_diff), max_err_rel);
  }
}

TEST(CudaFp8, NonFiniteWeightDeclines) {
  ANGELSLIM_REQUIRE_GPU();
  cuda::Fp8WeightQuantizer q(ctx());
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    auto w = gputest::random_vec(40 * 30, 5);
    w[777] = bad;
    auto d = cuda::to_device(ctx(), w);
    const std::vector<cuda::DeviceWeightsView> views = {{d.data(), nullptr, 40, 30}};
    const std::vector<int> group = {0};
    std::vector<Fp8Weight> out(1);
    out[0].scale = {123.0f};
    std::vector<float> err = {5.0f};
    for (const bool per_channel : {false, true}) {
      EXPECT_FALSE(q.quantize(views, group, per_channel, out, err));
      EXPECT_EQ(out[0].scale, std::vector<float>{123.0f}) << "untouched";
      EXPECT_EQ(err, std::vector<float>{5.0f});
    }
  }
}

}  // namespace
}  // namespace angelslim
