// Integer grids of SPEC 4.2 on hand-worked groups, and the RTN matrix routine against per-group evaluation.
#include "angelslim/quant/grid.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "angelslim/core/error.h"

namespace angelslim {
namespace {

std::vector<int> codes_of(const std::vector<float>& w, GroupParams p, int bits) {
  std::vector<int> out;
  for (float v : w) out.push_back(quantize_code(v, p, bits));
  return out;
}

TEST(Grid, GptqSymClipsPlusAmax) {
  // amax = 0.9375 -> S = 2*0.9375/15 = 0.125 (exact in bf16), Z = 8.
  const std::vector<float> w = {0.9375f, -0.9375f, 0.1875f, 0.0625f, -0.0625f, 0.0f};
  const GroupParams p = compute_group_params(w, GridKind::kGptqSym, 4, ScaleDType::kBF16);
  EXPECT_EQ(p.scale, 0.125f);
  EXPECT_EQ(p.zero, 8);
  // +amax = 7.5 S rounds (to even) to 8 and clips to 7 S (code 15); -amax -> -8 -> code 0; ties to even.
  EXPECT_EQ(codes_of(w, p, 4), (std::vector<int>{15, 0, 10, 8, 8, 8}));
  EXPECT_EQ(dequantize_code(15, p), 0.875f);
  // All-zero group: S = 2/Q; int8: S = 2/255 rounded to bf16.
  const std::vector<float> z = {0.0f, 0.0f};
  EXPECT_EQ(compute_group_params(z, GridKind::kGptqSym, 4, ScaleDType::kF32).scale, 2.0f / 15.0f);
  const GroupParams p8 =
      compute_group_params(std::vector<float>{1.0f, -0.5f}, GridKind::kGptqSym, 8, ScaleDType::kBF16);
  // 2/255 = 0.00784313... = 0x3C008081 in f32: low half 0x8081 > 0x8000 -> bf16 0x3C01 = 2^-7 * (1 + 1/128).
  EXPECT_EQ(p8.scale, 0.00787353515625f);
  EXPECT_EQ(p8.zero, 128);
  EXPECT_EQ(quantize_code(1.0f, p8, 8), 255);    // RNE(127.006) + 128
  EXPECT_EQ(quantize_code(-1.0f, p8, 8), 1);     // -127 + 128
  EXPECT_EQ(quantize_code(1.009f, p8, 8), 255);  // RNE(128.15) + 128 clips to 255
}

TEST(Grid, GptqAsym) {
  // x- = -0.3125, x+ = 1.5625: S = 1.875/15 = 0.125, Z = RNE(2.5) = 2.
  GroupParams p =
      compute_group_params(std::vector<float>{-0.3125f, 1.5625f}, GridKind::kGptqAsym, 4, ScaleDType::kBF16);
  EXPECT_EQ(p.scale, 0.125f);
  EXPECT_EQ(p.zero, 2);
  EXPECT_EQ(quantize_code(-0.3125f, p, 4), 0);  // RNE(-2.5) = -2
  EXPECT_EQ(quantize_code(1.5625f, p, 4), 14);  // RNE(12.5) = 12
  // All positive: x- = 0 -> Z = 0.
  p = compute_group_params(std::vector<float>{0.5f, 1.875f, 0.0625f}, GridKind::kGptqAsym, 4, ScaleDType::kBF16);
  EXPECT_EQ(p.scale, 0.125f);
  EXPECT_EQ(p.zero, 0);
  EXPECT_EQ(codes_of({0.5f, 1.875f, 0.0625f}, p, 4), (std::vector<int>{4, 15, 0}));
  // All zero: x- = -1, x+ = 1: S = bf16(2/15) = 0x3E09 = 0.1337890625, Z = RNE(1/S) = RNE(7.47) = 7.
  p = compute_group_params(std::vector<float>{0.0f, 0.0f}, GridKind::kGptqAsym, 4, ScaleDType::kBF16);
  EXPECT_EQ(p.scale, 0.1337890625f);
  EXPECT_EQ(p.zero, 7);
}

TEST(Grid, AwqAsym) {
  GroupParams p = compute_group_params(std::vector<float>{-0.5f, 1.375f}, GridKind::kAwqAsym, 4, ScaleDType::kF16);
  EXPECT_EQ(p.scale, 0.125f);
  EXPECT_EQ(p.zero, 4);
  // All positive: Z = -RNE(4) clamps to 0, so 2.375 (19 S) clips to 15 S.
  p = compute_group_params(std::vector<float>{0.5f, 2.375f}, GridKind::kAwqAsym, 4, ScaleDType::kF16);
  EXPECT_EQ(p.scale, 0.125f);
  EXPECT_EQ(p.zero, 0);
  EXPECT_EQ(codes_of({0.5f, 2.375f}, p, 4), (std::vector<int>{4, 15}));
  // Constant group: S = 1e-5/15 = 6.67e-7 -> f16 subnormal 11 * 2^-24; Z clamps to 0, codes clip to 15.
  p = compute_group_params(std::vector<float>{0.2f, 0.2f}, GridKind::kAwqAsym, 4, ScaleDType::kF16);
  EXPECT_EQ(p.scale, std::ldexp(11.0f, -24));
  EXPECT_EQ(p.zero, 0);
  EXPECT_EQ(quantize_code(0.2f, p, 4), 15);
}

TEST(Grid, AwqSymRepresentsAmaxExactly) {
  const GroupParams p =
      compute_group_params(std::vector<float>{0.875f, -0.875f, 0.3f}, GridKind::kAwqSym, 4, ScaleDType::kF16);
  EXPECT_EQ(p.scale, 0.125f);
  EXPECT_EQ(p.zero, 8);
  EXPECT_EQ(codes_of({0.875f, -0.875f, 0.3f}, p, 4), (std::vector<int>{15, 1, 10}));
  EXPECT_EQ(quantize_dequantize(-0.875f, p, 4), -0.875f);
  // Floor 1e-5: S = 1e-5/7.
  EXPECT_EQ(compute_group_params(std::vector<float>{0.0f}, GridKind::kAwqSym, 4, ScaleDType::kF32).scale, 1e-5f / 7.0f);
}

TEST(Grid, ScaleIsRoundedBeforeCodes) {
  // amax = 1 -> S = 2/15 = 0.13333334 in f32, 0.1337890625 in bf16. w = 0.868 is 6.51 S with the f32 scale
  // (code 8 + 7) but 6.488 S with the bf16 one (code 8 + 6): the codes must use the rounded scale.
  const std::vector<float> w = {1.0f, -1.0f, 0.868f};
  const GroupParams pb = compute_group_params(w, GridKind::kGptqSym, 4, ScaleDType::kBF16);
  const GroupParams pf = compute_group_params(w, GridKind::kGptqSym, 4, ScaleDType::kF32);
  EXPECT_EQ(pb.scale, 0.1337890625f);
  EXPECT_EQ(pf.scale, 2.0f / 15.0f);
  EXPECT_EQ(quantize_code(0.868f, pb, 4), 8 + 6);
  EXPECT_EQ(quantize_code(0.868f, pf, 4), 8 + 7);
}

TEST(Grid, RtnMatrixMatchesPerGroupAndErrorBound) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int rows = 5, cols = 64;
  std::vector<float> w(rows * cols);
  for (float& v : w) v = nd(rng);
  for (int gs : {16, 32, -1}) {
    for (GridKind kind : {GridKind::kGptqSym, GridKind::kGptqAsym, GridKind::kAwqAsym, GridKind::kAwqSym}) {
      const GridSpec spec{kind, 4, gs, ScaleDType::kF32};
      const QuantizedMatrix q = rtn_quantize(w, rows, cols, spec);
      const int g = gs == -1 ? cols : gs;
      ASSERT_EQ(q.group_size, g);
      ASSERT_EQ(q.n_groups, cols / g);
      for (int r = 0; r < rows; ++r)
        for (int gi = 0; gi < cols / g; ++gi) {
          const std::span<const float> grp(w.data() + r * cols + gi * g, g);
          const GroupParams p = compute_group_params(grp, kind, 4, ScaleDType::kF32);
          EXPECT_EQ(q.scales[r * q.n_groups + gi], p.scale);
          EXPECT_EQ(q.zeros[r * q.n_groups + gi], p.zero);
          for (int j = 0; j < g; ++j) {
            const int idx = r * cols + gi * g + j;
            EXPECT_EQ(q.codes[idx], quantize_code(w[idx], p, 4));
            EXPECT_EQ(q.dequant[idx], (q.codes[idx] - p.zero) * p.scale);
            // Groups hold both signs here, so only GPTQ-sym's +amax clip exceeds half a step (by S at most).
            const float bound = kind == GridKind::kGptqSym ? 1.0f : 0.5f;
            EXPECT_LE(std::fabs(q.dequant[idx] - w[idx]), bound * p.scale * 1.0001f);
          }
        }
    }
  }
  EXPECT_THROW(rtn_quantize(w, rows, cols, GridSpec{GridKind::kGptqSym, 4, 48, ScaleDType::kBF16}), InvalidInput);
  EXPECT_THROW(rtn_quantize(w, rows, cols, GridSpec{GridKind::kGptqSym, 9, 16, ScaleDType::kBF16}), InvalidInput);
  w[3] = std::nanf("");
  EXPECT_THROW(rtn_quantize(w, rows, cols, GridSpec{}), InvalidInput);
}

}  // namespace
}  // namespace angelslim
