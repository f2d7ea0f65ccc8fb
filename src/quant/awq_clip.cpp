// AWQ clip search; see include/angelslim/quant/awq_clip.h and SPEC 4.5.6.
#include "angelslim/quant/awq_clip.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "angelslim/core/error.h"

namespace angelslim {

std::vector<int64_t> awq_clip_token_rows(int64_t n_tokens, int max_tokens) {
  ANGELSLIM_CHECK(n_tokens >= 1 && max_tokens >= 1, InvalidInput,
                  "awq clip needs at least one token (got {}) and max_tokens >= 1 (got {})", n_tokens, max_tokens);
  const int64_t step = (n_tokens + max_tokens - 1) / max_tokens;
  std::vector<int64_t> out;
  for (int64_t t = 0; t < n_tokens; t += step) out.push_back(t);
  return out;
}

std::vector<float> awq_clip_search(std::span<float> w, int rows, int cols, std::span<const float> x, int64_t n_tokens,
                                   const GridSpec& spec, int max_tokens) {
  ANGELSLIM_CHECK(rows >= 1 && cols >= 1 && w.size() == static_cast<std::size_t>(rows) * cols, InvalidInput,
                  "awq clip: weight has {} elements, expected [{}, {}]", w.size(), rows, cols);
  ANGELSLIM_CHECK(n_tokens >= 1 && x.size() == static_cast<std::size_t>(n_tokens) * cols, InvalidInput,
                  "awq clip: input has {} elements, expected [{}, {}]", x.size(), n_tokens, cols);
  const int g = resolve_group_size(spec.group_size, cols);
  const int n_groups = cols / g;
  const std::vector<int64_t> sel = awq_clip_token_rows(n_tokens, max_tokens);
  const int n = static_cast<int>(sel.size());

  std::vector<float> best_m(static_cast<std::size_t>(rows) * n_groups);
  std::vector<float> xg(static_cast<std::size_t>(n) * g);    // sampled tokens of one group: [n, g]
  std::vector<float> gram(static_cast<std::size_t>(g) * g);  // [g, g] = xg^T xg / n
  std::vector<float> d(static_cast<std::size_t>(rows) * g);  // [rows, g] dequant(quant(Wc)) - W
  std::vector<float> dg(d.size());                           // d * gram
  std::vector<float> best_err(rows);
  std::vector<float> m0(rows);
  for (int gi = 0; gi < n_groups; ++gi) {
    for (int t = 0; t < n; ++t)
      for (int j = 0; j < g; ++j) {
        const float v = x[static_cast<std::size_t>(sel[t]) * cols + static_cast<std::size_t>(gi) * g + j];
        ANGELSLIM_CHECK(std::isfinite(v), InvalidInput, "awq clip: input [{}, {}] is {} (expected finite)", sel[t],
                        gi * g + j, v);
        xg[static_cast<std::size_t>(t) * g + j] = v;
      }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g, g, n, 1.0f / static_cast<float>(n), xg.data(), g, xg.data(),
                g, 0.0f, gram.data(), g);
    for (int r = 0; r < rows; ++r) {
      const float* wr = w.data() + static_cast<std::size_t>(r) * cols + static_cast<std::size_t>(gi) * g;
      float a = 0.0f;
      for (int j = 0; j < g; ++j) {
        ANGELSLIM_CHECK(std::isfinite(wr[j]), InvalidInput, "awq clip: weight [{}, {}] is {} (expected finite)", r,
                        gi * g + j, wr[j]);
        a = std::max(a, std::fabs(wr[j]));
      }
      m0[r] = a;
    }
    for (int step = 0; step < kAwqClipSteps; ++step) {
      const float shrink = 1.0f - static_cast<float>(step) / 20.0f;
      for (int r = 0; r < rows; ++r) {
        const float m = m0[r] * shrink;
        const float* wr = w.data() + static_cast<std::size_t>(r) * cols + static_cast<std::size_t>(gi) * g;
        float lo = m, hi = -m;
        for (int j = 0; j < g; ++j) {
          const float c = std::clamp(wr[j], -m, m);
          lo = std::min(lo, c);
          hi = std::max(hi, c);
        }
        const GroupParams p = group_params_from_range(lo, hi, spec.kind, spec.bits, spec.scale_dtype);
        float* dr = d.data() + static_cast<std::size_t>(r) * g;
        for (int j = 0; j < g; ++j) dr[j] = quantize_dequantize(std::clamp(wr[j], -m, m), p, spec.bits) - wr[j];
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, g, g, 1.0f, d.data(), g, gram.data(), g, 0.0f,
                  dg.data(), g);
      for (int r = 0; r < rows; ++r) {
        float e = 0.0f;
        for (int j = 0; j < g; ++j)
          e += d[static_cast<std::size_t>(r) * g + j] * dg[static_cast<std::size_t>(r) * g + j];
        if (step == 0 || e < best_err[r]) {
          best_err[r] = e;
          best_m[static_cast<std::size_t>(r) * n_groups + gi] = m0[r] * shrink;
        }
      }
    }
    for (int r = 0; r < rows; ++r) {
      const float m = best_m[static_cast<std::size_t>(r) * n_groups + gi];
      float* wr = w.data() + static_cast<std::size_t>(r) * cols + static_cast<std::size_t>(gi) * g;
      for (int j = 0; j < g; ++j) wr[j] = std::clamp(wr[j], -m, m);
    }
  }
  return best_m;
}

}  // namespace angelslim
