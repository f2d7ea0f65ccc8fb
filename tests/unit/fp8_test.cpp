// FP8 e4m3fn conversion checked exhaustively against SPEC 4.3.1, and the FP8 weight quantization helpers (4.3.2).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"
#include "angelslim/quant/fp8_weight.h"

namespace angelslim {
namespace {

// Independent decode of a non-negative byte from the SPEC formula, in double.
double spec_value(int b) {
  const int e = (b >> 3) & 0xf;
  const int m = b & 7;
  if (e == 0) return m * std::ldexp(1.0, -9);
  return (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
}

// Nearest e4m3 byte by exhaustive search over the 127 finite non-negative values (ties: even mantissa),
// after saturating to 448; the reference for f32_to_fp8e4m3.
uint8_t brute_force_encode(float y) {
  const double a = std::min(std::fabs(static_cast<double>(y)), 448.0);
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int b = 0; b <= 0x7e; ++b) {
    const double d = std::fabs(spec_value(b) - a);
    if (d < best_d || (d == best_d && (b & 1) == 0)) {
      best = b;
      best_d = d;
    }
  }
  return static_cast<uint8_t>(best | (std::signbit(y) ? 0x80 : 0));
}

TEST(Fp8, DecodeMatchesSpecFormula) {
  for (int b = 0; b < 256; ++b) {
    const float v = fp8e4m3_to_f32(static_cast<uint8_t>(b));
    if ((b & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(v)) << b;
      continue;
    }
    const double expect = (b & 0x80) ? -spec_value(b & 0x7f) : spec_value(b & 0x7f);
    EXPECT_EQ(static_cast<double>(v), expect) << "byte " << b;
  }
  EXPECT_EQ(fp8e4m3_to_f32(0x01), 0.001953125f);  // smallest subnormal 2^-9
  EXPECT_EQ(fp8e4m3_to_f32(0x08), 0.015625f);     // smallest normal 2^-6
  EXPECT_EQ(fp8e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(fp8e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(fp8e4m3_to_f32(0xfe), -448.0f);
}

TEST(Fp8, EveryByteRoundTrips) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f || b == 0x80) continue;  // NaNs; -0 may encode either zero
    EXPECT_EQ(f32_to_fp8e4m3(fp8e4m3_to_f32(static_cast<uint8_t>(b))), b) << "byte " << b;
  }
  const uint8_t nz = f32_to_fp8e4m3(-0.0f);
  EXPECT_TRUE(nz == 0x80 || nz == 0x00);
}

TEST(Fp8, MidpointsTieToEvenMantissa) {
  // Consecutive non-negative bytes are consecutive values, so the even neighbour is the one with bit 0 clear.
  for (int b = 0; b < 0x7e; ++b) {
    const float lo = fp8e4m3_to_f32(static_cast<uint8_t>(b));
    const float hi = fp8e4m3_to_f32(static_cast<uint8_t>(b + 1));
    const float mid = (lo + hi) / 2;  // exact: both have <= 4 significant bits
    ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(lo) + hi) / 2);
    const int even = (b & 1) == 0 ? b : b + 1;
    EXPECT_EQ(f32_to_fp8e4m3(mid), even) << "mid of " << b << "," << b + 1;
    EXPECT_EQ(f32_to_fp8e4m3(-mid), even | 0x80) << "-mid of " << b << "," << b + 1;
    // One float ulp either side of the midpoint leaves the tie.
    EXPECT_EQ(f32_to_fp8e4m3(std::nextafter(mid, 0.0f)), b);
    EXPECT_EQ(f32_to_fp8e4m3(std::nextafter(mid, 1000.0f)), b + 1);
  }
}

TEST(Fp8, SaturatesBeyond448) {
  for (float v : {448.0f, 448.5f, 463.99f, 464.0f, 480.0f, 1.0e6f, 3.0e38f, std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(f32_to_fp8e4m3(v), 0x7e) << v;
    EXPECT_EQ(f32_to_fp8e4m3(-v), 0xfe) << -v;
  }
  EXPECT_EQ(f32_to_fp8e4m3(std::numeric_limits<float>::quiet_NaN()) & 0x7f, 0x7f);
}

TEST(Fp8, RandomValuesMatchBruteForce) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> exp_dist(-14.0f, 10.0f);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int i = 0; i < 200000; ++i) {
    const float y = std::ldexp(unit(rng), static_cast<int>(exp_dist(rng)));
    ASSERT_EQ(f32_to_fp8e4m3(y), brute_force_encode(y)) << y;
  }
  // Tiny values: below a quarter of the smallest subnormal round to (signed) zero.
  EXPECT_EQ(f32_to_fp8e4m3(1e-30f), 0x00);
  EXPECT_EQ(f32_to_fp8e4m3(std::ldexp(1.0f, -10)), 0x00);  // tie between 0 and 2^-9 -> even (0)
  EXPECT_EQ(f32_to_fp8e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
}

TEST(Fp8Weight, PerTensorScaleAndCodes) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  const int rows = 16, cols = 48;
  std::vector<float> w(rows * cols);
  for (float& v : w) v = nd(rng);
  w[37] = -0.3f;  // the amax element
  const Fp8Weight q = quantize_fp8_per_tensor(w, rows, cols);
  ASSERT_EQ(q.scale.size(), 1u);
  EXPECT_EQ(q.scale[0], 0.3f / 448.0f);
  EXPECT_EQ(q.data[37], 0xfe);  // -amax maps to -448 exactly
  const std::vector<float> dq = dequantize_fp8(q, rows, cols);
  for (std::size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(q.data[i], f32_to_fp8e4m3(w[i] / q.scale[0]));
    // e4m3 relative half step is 2^-4 for normals; subnormals have absolute half step 2^-10 (times scale).
    EXPECT_LE(std::fabs(dq[i] - w[i]), std::max(std::fabs(w[i]) / 16.0f, std::ldexp(1.0f, -10) * q.scale[0]) * 1.0001f);
  }
}

TEST(Fp8Weight, PerChannelScalesAndFloor) {
  const int rows = 3, cols = 4;
  const std::vector<float> w = {1.0f, -2.0f, 0.5f, 0.25f, 0.0f, 0.0f, 0.0f, 0.0f, 4.48f, 1.0f, -1.0f, 0.001f};
  const Fp8Weight q = quantize_fp8_per_channel(w, rows, cols);
  ASSERT_EQ(q.scale.size(), 3u);
  EXPECT_EQ(q.scale[0], 2.0f / 448.0f);
  EXPECT_EQ(q.scale[1], 1e-12f / 448.0f);  // all-zero row: amax floor 1e-12
  EXPECT_EQ(q.scale[2], 4.48f / 448.0f);
  EXPECT_EQ(q.data[1], 0xfe);
  for (int c = 0; c < cols; ++c) EXPECT_EQ(q.data[4 + c], 0x00);
  EXPECT_EQ(q.data[8], 0x7e);
  // 1.0 / (2/448) = 224 -> byte for 224 = 1.75 * 2^7: E = 14, m = 6.
  EXPECT_EQ(q.data[0], (14 << 3) | 6);
}

TEST(Fp8Weight, SharedScaleSaturatesAndNanIsAnError) {
  const std::vector<float> w = {1.0f, 2.0f};
  const float s = 1.0f / 448.0f;  // a scale shared with a smaller tensor: 2.0 saturates
  const Fp8Weight q = quantize_fp8_with_scales(w, 1, 2, std::span<const float>(&s, 1));
  EXPECT_EQ(q.data[0], 0x7e);
  EXPECT_EQ(q.data[1], 0x7e);
  const std::vector<float> bad = {1.0f, std::nanf("")};
  EXPECT_THROW(quantize_fp8_per_tensor(bad, 1, 2), InvalidInput);
  EXPECT_THROW(quantize_fp8_per_tensor(w, 1, 3), InvalidInput);
}

}  // namespace
}  // namespace angelslim
