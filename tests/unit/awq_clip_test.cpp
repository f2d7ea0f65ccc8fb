// AWQ clip search (SPEC 4.5.6) against a direct FP64 evaluation of the output error on the sampled tokens.
#include "angelslim/quant/awq_clip.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "angelslim/core/error.h"

namespace angelslim {
namespace {

TEST(AwqClip, TokenSubsampling) {
  EXPECT_EQ(awq_clip_token_rows(5).size(), 5u);
  EXPECT_EQ(awq_clip_token_rows(1024).size(), 1024u);
  const auto r = awq_clip_token_rows(1025);  // step 2
  ASSERT_EQ(r.size(), 513u);
  EXPECT_EQ(r[1], 2);
  EXPECT_EQ(r.back(), 1024);
  const auto s = awq_clip_token_rows(3000);  // step 3
  ASSERT_EQ(s.size(), 1000u);
  EXPECT_EQ(s[999], 2997);
  EXPECT_THROW(awq_clip_token_rows(0), InvalidInput);
}

TEST(AwqClip, MatchesDirectEvaluation) {
  const int rows = 16, cols = 128, n_tokens = 3000;
  std::mt19937 rng(21);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::student_t_distribution<float> heavy(2.0f);  // outliers make clipping worthwhile
  std::vector<float> x(static_cast<std::size_t>(n_tokens) * cols), w(static_cast<std::size_t>(rows) * cols);
  for (int t = 0; t < n_tokens; ++t)
    for (int j = 0; j < cols; ++j) x[t * cols + j] = nd(rng) * (1.0f + 0.5f * (j % 5)) + 0.3f * nd(rng);
  for (float& v : w) v = 0.02f * heavy(rng);
  for (GridKind kind : {GridKind::kAwqAsym, GridKind::kAwqSym}) {
    const GridSpec spec{kind, 4, 32, ScaleDType::kF16};
    std::vector<float> wc = w;
    const std::vector<float> m = awq_clip_search(wc, rows, cols, x, n_tokens, spec);
    ASSERT_EQ(m.size(), static_cast<std::size_t>(rows * 4));
    const auto sel = awq_clip_token_rows(n_tokens);
    int clipped = 0;
    for (int r = 0; r < rows; ++r)
      for (int gi = 0; gi < 4; ++gi) {
        const float* wr = w.data() + r * cols + gi * 32;
        float m0 = 0.0f;
        for (int j = 0; j < 32; ++j) m0 = std::max(m0, std::fabs(wr[j]));
        // Direct error for each candidate, FP64 over the sampled tokens.
        std::vector<double> err(kAwqClipSteps);
        std::vector<float> cand(kAwqClipSteps);
        for (int i = 0; i < kAwqClipSteps; ++i) {
          cand[i] = m0 * (1.0f - static_cast<float>(i) / 20.0f);
          std::vector<float> c(32);
          for (int j = 0; j < 32; ++j) c[j] = std::clamp(wr[j], -cand[i], cand[i]);
          const GroupParams p = compute_group_params(c, kind, 4, ScaleDType::kF16);
          double s = 0.0;
          for (int64_t t : sel) {
            double dot = 0.0;
            for (int j = 0; j < 32; ++j)
              dot += double(x[t * cols + gi * 32 + j]) * (quantize_dequantize(c[j], p, 4) - wr[j]);
            s += dot * dot;
          }
          err[i] = s / sel.size();
        }
        int best = 0;
        for (int i = 1; i < kAwqClipSteps; ++i)
          if (err[i] < err[best]) best = i;
        const float got = m[r * 4 + gi];
        int got_i = -1;
        for (int i = 0; i < kAwqClipSteps; ++i)
          if (cand[i] == got) got_i = i;
        ASSERT_GE(got_i, 0) << "m* is not one of the candidates";
        // FP32 Gram evaluation vs FP64 direct: a different pick only between near-equal errors (1e-4 relative).
        EXPECT_LE(err[got_i], err[best] * (1.0 + 1e-4)) << "row " << r << " group " << gi;
        clipped += got_i > 0;
        for (int j = 0; j < 32; ++j) EXPECT_EQ(wc[r * cols + gi * 32 + j], std::clamp(wr[j], -got, got));
      }
    EXPECT_GT(clipped, 8) << "the heavy-tailed weights should make clipping win for some groups";
  }
}

}  // namespace
}  // namespace angelslim
