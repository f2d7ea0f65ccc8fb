// AWQ clip search (SPEC 4.5.6, `mse_range: true`), after llm-awq's auto_clip: per output row and input group,
// the clamp range m = m0 * (1 - i/20), i = 0..9, minimising the mean squared output error on sampled tokens.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "angelslim/quant/grid.h"

namespace angelslim {

constexpr int kAwqClipMaxTokens = 1024;
constexpr int kAwqClipSteps = 10;  // shrink factors 1 - i/20, i = 0..9

// Rows of X used by the search: every ceil(N / max_tokens)-th token starting at 0 (at most max_tokens).
std::vector<int64_t> awq_clip_token_rows(int64_t n_tokens, int max_tokens = kAwqClipMaxTokens);

// Searches and applies the clip. w: [rows, cols] f32 row-major, clamped in place to +-m* per (row, group);
// x: [n_tokens, cols] f32 row-major, the linear's input (already divided by the AWQ scales), n_tokens >= 1;
// spec: the export grid (AWQ-asym or AWQ-sym, group along cols, scale dtype). Returns m*: [rows, n_groups] f32.
// err(i) = mean_t (X[t, group] . (dequant(quant(clamp(W, -m, m))) - W)[group])^2 is evaluated as d^T G d with
// the group's Gram block G = X^T X / n (FP32); the smallest err wins, ties keep the larger m (strict <).
std::vector<float> awq_clip_search(std::span<float> w, int rows, int cols, std::span<const float> x, int64_t n_tokens,
                                   const GridSpec& spec, int max_tokens = kAwqClipMaxTokens);

}  // namespace angelslim
