// Degenerate groups on every grid of SPEC 4.2: all-equal groups (zero, positive, negative, tiny) give a finite
// positive scale, an in-range zero and the dequantized values of the grid formulas; a scale that would round to 0
// in its dtype becomes the dtype's smallest positive value (so no code clips); a scale overflowing its dtype is an
// error.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"
#include "angelslim/quant/grid.h"

namespace angelslim {
namespace {

constexpr GridKind kKinds[] = {GridKind::kGptqSym, GridKind::kGptqAsym, GridKind::kAwqAsym, GridKind::kAwqSym};
constexpr ScaleDType kDtypes[] = {ScaleDType::kBF16, ScaleDType::kF16, ScaleDType::kF32};

TEST(GridEdges, AllEqualGroupsAreFiniteAndFollowTheFormulas) {
  for (GridKind kind : kKinds)
    for (ScaleDType dt : kDtypes)
      for (float c : {0.0f, 0.37f, -0.37f, 3.0e-3f, -1.0e-6f}) {
        SCOPED_TRACE(::testing::Message()
                     << "kind " << static_cast<int>(kind) << " dtype " << static_cast<int>(dt) << " value " << c);
        const std::vector<float> w(128, c);
        const GroupParams p = compute_group_params(w, kind, 4, dt);
        ASSERT_TRUE(std::isfinite(p.scale) && p.scale > 0.0f);
        ASSERT_GE(p.zero, 0);
        ASSERT_LE(p.zero, 15);
        const float d = quantize_dequantize(c, p, 4);
        ASSERT_TRUE(std::isfinite(d));
        switch (kind) {
          case GridKind::kGptqSym:     // |c| = amax = 7.5 S: RNE to 8, clipped to 7 for +amax (half a step)
          case GridKind::kGptqAsym: {  // the range [min(0,c), max(0,c)] = 15 S holds c
            // Half a step, plus what rounding S to its dtype moves the grid's end (7.5 or 15 steps away); the
            // rounding is coarse where S is subnormal (F16 scales of |c| = 1e-6).
            const float exact = c == 0.0f ? p.scale : std::fabs(c) * (kind == GridKind::kGptqSym ? 2.0f : 1.0f) / 15;
            EXPECT_LE(std::fabs(d - c), 0.5f * p.scale + 15.0f * std::fabs(p.scale - exact) + 1e-6f * std::fabs(c));
            break;
          }
          case GridKind::kAwqSym:  // amax at +-7S exactly, up to the scale rounding
            EXPECT_LE(std::fabs(d - c), std::fabs(c) * 1e-2f + 1e-5f);
            break;
          case GridKind::kAwqAsym: {
            // S = max(0, 1e-5)/15 rounded; Z = clamp(-RNE(c/S), 0, 15): an all-equal group keeps only what
            // [(0 - Z)S, (15 - Z)S] reaches (the llm-awq behaviour for one-sign groups).
            const float s = round_scale(1e-5f / 15.0f, dt);
            EXPECT_EQ(p.scale, s);
            const float z = std::min(15.0f, std::max(0.0f, -std::nearbyint(c / s)));
            EXPECT_EQ(p.zero, static_cast<int>(z));
            const float q = std::min(15.0f, std::max(0.0f, std::nearbyint(c / s) + z));
            EXPECT_EQ(d, (q - z) * s);
            break;
          }
        }
      }
}

TEST(GridEdges, ScaleUnderflowGetsTheSmallestPositiveScale) {
  // GPTQ-sym with F16 scales: 2 * 1e-7 / 15 = 1.3e-8 is below half the smallest F16 subnormal (2^-25).
  for (GridKind kind : {GridKind::kGptqSym, GridKind::kGptqAsym}) {
    std::vector<float> w(64);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = 1e-7f * (static_cast<float>(i % 7) - 3.0f) / 3.0f;
    const GroupParams p = compute_group_params(w, kind, 4, ScaleDType::kF16);
    EXPECT_EQ(p.scale, std::ldexp(1.0f, -24));
    EXPECT_EQ(p.scale, smallest_scale(ScaleDType::kF16));
    // Every value within half a step: the floored scale only widens the grid, nothing clips.
    for (float v : w) EXPECT_LE(std::fabs(quantize_dequantize(v, p, 4) - v), p.scale / 2) << v;
  }
  // The same group with BF16 scales needs no floor: the rounded exact scale.
  const GroupParams b = group_params_from_range(-1e-7f, 1e-7f, GridKind::kGptqSym, 4, ScaleDType::kBF16);
  EXPECT_EQ(b.scale, round_bf16(2e-7f / 15.0f));
  EXPECT_EQ(smallest_scale(ScaleDType::kBF16), std::ldexp(1.0f, -133));
  EXPECT_EQ(smallest_scale(ScaleDType::kF32), std::ldexp(1.0f, -149));
}

TEST(GridEdges, ScaleOverflowIsAnError) {
  // 2 * 1e6 / 15 > 65504: no F16 scale holds it.
  EXPECT_THROW(group_params_from_range(-1e6f, 1e6f, GridKind::kGptqSym, 4, ScaleDType::kF16), InvalidInput);
  EXPECT_NO_THROW(group_params_from_range(-1e6f, 1e6f, GridKind::kGptqSym, 4, ScaleDType::kBF16));
}

TEST(GridEdges, NonFiniteWeightIsAnError) {
  for (GridKind kind : kKinds) {
    std::vector<float> w(8, 0.5f);
    w[3] = std::nanf("");
    EXPECT_THROW(compute_group_params(w, kind, 4, ScaleDType::kF16), InvalidInput);
    w[3] = INFINITY;
    EXPECT_THROW(compute_group_params(w, kind, 4, ScaleDType::kF16), InvalidInput);
  }
}

}  // namespace
}  // namespace angelslim
