// AWQ building blocks (SPEC 4.5): per-channel scales from activation means, fake quantization of scaled weights
// on the export grid, folding the inverse scale into a norm and Gram-matrix output losses (the clip search is in awq_clip.h).
// After Lin et al., "AWQ" (arXiv:2306.00978) sections 3.2-3.3 and the llm-awq auto_scale step.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "angelslim/core/dtype.h"
#include "angelslim/quant/grid.h"

namespace angelslim {

// The search tries alpha = i / kAwqAlphaSteps for i = 0 .. kAwqAlphaSteps - 1 (0, 0.05, ..., 0.95; SPEC 4.5.2).
constexpr int kAwqAlphaSteps = 20;
inline float awq_alpha(int i) { return static_cast<float>(i) / static_cast<float>(kAwqAlphaSteps); }

// s_c = max(x_mean_c^alpha, 1e-4), then s /= sqrt(max(s) * min(s)) (FP32). x_mean: [K] f32, finite, >= 0.
// alpha = 0 gives s = 1 exactly. Returns [K].
std::vector<float> awq_scales(std::span<const float> x_mean, float alpha);

// W' = dequant(quant(W diag(s))) diag(1/s) on `grid` (groups of consecutive input columns).
// w: [rows, cols] f32 row-major ([out, in]); s: [cols] f32 > 0. Returns [rows, cols].
std::vector<float> awq_fake_quantize(std::span<const float> w, int rows, int cols, std::span<const float> s,
                                     const GridSpec& grid);

// Rounds a value to a floating-point storage dtype (BF16, F16 or F32; InvalidInput for other dtypes).
float round_to_dtype(float v, DType dtype);
// Encodes values in a floating-point storage dtype (little-endian bytes, v.size() * dtype_size(dtype) long).
std::vector<uint8_t> encode_float_dtype(std::span<const float> v, DType dtype);

// Folding 1/s into a norm weight stored as `dtype` (SPEC 4.5.5): weight = round(w / s), s_eff = w / weight
// (s where the rounded weight or w is 0, so the column is unchanged in effect). w, s: [n] f32.
struct NormFold {
  std::vector<float> weight;  // [n] f32, exactly representable in dtype
  std::vector<float> s_eff;   // [n] f32: multiply the following linears' input columns by this
};
NormFold awq_fold_norm(std::span<const float> w, std::span<const float> s, DType dtype);

// Multiplies column c of w [rows, cols] by s[c] (in place).
void scale_columns(std::span<float> w, int rows, int cols, std::span<const float> s);
// Divides row r of w [rows, cols] by s[r] (in place).
void divide_rows(std::span<float> w, int rows, int cols, std::span<const float> s);

// Sum over rows r of d_r^T G d_r with d = w_hat - w: the summed squared output error of a linear on the
// inputs whose Gram matrix is G = X^T X. w, w_hat: [rows, cols] f32; g: [cols, cols] f32 symmetric.
double gram_error(std::span<const float> w, std::span<const float> w_hat, int rows, int cols,
                  std::span<const float> g);

}  // namespace angelslim
