// NaN/Inf scans of the pipeline (pipeline/nonfinite.h): every float dtype, the largest finite values not flagged,
// the element named as [row, col], and the activation scan naming layer, sample and token.
#include "angelslim/pipeline/nonfinite.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "angelslim/core/error.h"

namespace angelslim {
namespace {

template <typename T>
TensorView view(std::vector<T>& v, DType dt, std::vector<int64_t> shape) {
  TensorView t;
  t.name = "w";
  t.file = "f.safetensors";
  t.dtype = dt;
  t.shape = std::move(shape);
  t.data = reinterpret_cast<const uint8_t*>(v.data());
  t.nbytes = v.size() * sizeof(T);
  return t;
}

std::string error_of(const TensorView& t) {
  try {
    check_finite(t);
  } catch (const InvalidInput& e) {
    return e.what();
  }
  return "";
}

// A tensor of several scan pieces (16M elements each, scanned on threads): the earliest hit wins whatever piece
// finishes first, including one at a piece boundary.
TEST(Nonfinite, LargeTensorGivesTheEarliestHit) {
  const std::size_t piece = std::size_t{16} << 20;
  std::vector<uint16_t> b(2 * piece + 1000, 0x3f80);
  auto tb = view(b, DType::kBF16, {static_cast<int64_t>(b.size())});
  EXPECT_EQ(first_nonfinite(tb), -1);
  b[2 * piece + 999] = 0x7f80;
  EXPECT_EQ(first_nonfinite(tb), static_cast<int64_t>(2 * piece + 999));
  b[piece] = 0x7fc1;
  EXPECT_EQ(first_nonfinite(tb), static_cast<int64_t>(piece));
  b[piece - 1] = 0xff80;
  EXPECT_EQ(first_nonfinite(tb), static_cast<int64_t>(piece - 1));
}

TEST(Nonfinite, Bf16F16F32F64) {
  // bf16: 0x7f7f is the largest finite value, 0x7f80 +Inf, 0x7fc1 a NaN, 0xff80 -Inf.
  std::vector<uint16_t> b(6000, 0x3f80);
  b[10] = 0x7f7f;
  b[11] = 0xff7f;
  auto tb = view(b, DType::kBF16, {3, 2000});
  EXPECT_EQ(first_nonfinite(tb), -1);
  b[4100] = 0x7fc1;  // past the first scan block
  EXPECT_EQ(first_nonfinite(tb), 4100);
  EXPECT_NE(error_of(tb).find("f.safetensors: tensor 'w' element [2, 100] is nan"), std::string::npos) << error_of(tb);
  b[5] = 0xff80;
  EXPECT_EQ(first_nonfinite(tb), 5);
  EXPECT_NE(error_of(tb).find("element [0, 5] is -inf"), std::string::npos) << error_of(tb);
  b[5] = 0x7f80;
  EXPECT_NE(error_of(tb).find("element [0, 5] is inf"), std::string::npos) << error_of(tb);

  std::vector<uint16_t> h(16, 0x3c00);
  h[1] = 0x7bff;  // 65504
  auto th = view(h, DType::kF16, {16});
  EXPECT_EQ(first_nonfinite(th), -1);
  h[9] = 0xfc00;  // -Inf
  EXPECT_EQ(first_nonfinite(th), 9);

  std::vector<float> f(16, 1.0f);
  f[2] = std::numeric_limits<float>::max();
  f[3] = std::numeric_limits<float>::denorm_min();
  auto tf = view(f, DType::kF32, {4, 4});
  EXPECT_EQ(first_nonfinite(tf), -1);
  f[14] = std::nanf("");
  EXPECT_EQ(first_nonfinite(tf), 14);
  EXPECT_NE(error_of(tf).find("element [3, 2] is nan"), std::string::npos);

  std::vector<double> g(4, 1.0);
  g[3] = -std::numeric_limits<double>::infinity();
  EXPECT_EQ(first_nonfinite(view(g, DType::kF64, {4})), 3);

  std::vector<int32_t> i(4, -1);  // all bits set: not a float type, never flagged
  EXPECT_EQ(first_nonfinite(view(i, DType::kI32, {4})), -1);
}

TEST(Nonfinite, ActivationsNameLayerSampleToken) {
  const int64_t d = 8;
  const std::vector<int64_t> offsets = {0, 3, 10, 12};  // samples of 3, 7 and 2 tokens
  std::vector<float> x(12 * d, 0.25f);
  EXPECT_NO_THROW(check_finite_activations(x, d, offsets, 4));
  x[5 * d + 6] = INFINITY;  // sample 1, token 2, channel 6
  try {
    check_finite_activations(x, d, offsets, 4);
    FAIL() << "no error";
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.4:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sample 1 token 2 channel 6"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace angelslim
