// AWQ building blocks; see include/angelslim/quant/awq.h and SPEC 4.5.
#include "angelslim/quant/awq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "angelslim/core/error.h"

namespace angelslim {

std::vector<float> awq_scales(std::span<const float> x_mean, float alpha) {
  ANGELSLIM_CHECK(!x_mean.empty(), InvalidInput, "awq_scales: empty activation statistic");
  std::vector<float> s(x_mean.size());
  float mx = 0.0f, mn = 0.0f;
  for (std::size_t c = 0; c < s.size(); ++c) {
    const float x = x_mean[c];
    ANGELSLIM_CHECK(std::isfinite(x) && x >= 0.0f, InvalidInput,
                    "awq_scales: activation mean {} of channel {} is not finite and non-negative", x, c);
    s[c] = std::max(std::pow(x, alpha), 1e-4f);
    mx = c == 0 ? s[c] : std::max(mx, s[c]);
    mn = c == 0 ? s[c] : std::min(mn, s[c]);
  }
  const float norm = std::sqrt(mx * mn);
  for (auto& v : s) v /= norm;
  return s;
}

std::vector<float> awq_fake_quantize(std::span<const float> w, int rows, int cols, std::span<const float> s,
                                     const GridSpec& grid) {
  ANGELSLIM_CHECK(w.size() == static_cast<std::size_t>(rows) * cols && s.size() == static_cast<std::size_t>(cols),
                  InvalidInput, "awq_fake_quantize: weight has {} values and s {}, expected {}x{} and {}", w.size(),
                  s.size(), rows, cols, cols);
  const int g = resolve_group_size(grid.group_size, cols);
  std::vector<float> out(w.size());
  std::vector<float> ws(static_cast<std::size_t>(g));
  for (int r = 0; r < rows; ++r) {
    for (int c0 = 0; c0 < cols; c0 += g) {
      const float* wr = w.data() + static_cast<std::size_t>(r) * cols + c0;
      float lo = 0.0f, hi = 0.0f;
      for (int j = 0; j < g; ++j) {
        ws[j] = wr[j] * s[c0 + j];
        lo = j == 0 ? ws[j] : std::min(lo, ws[j]);
        hi = j == 0 ? ws[j] : std::max(hi, ws[j]);
      }
      const GroupParams p = group_params_from_range(lo, hi, grid.kind, grid.bits, grid.scale_dtype);
      float* o = out.data() + static_cast<std::size_t>(r) * cols + c0;
      for (int j = 0; j < g; ++j) o[j] = quantize_dequantize(ws[j], p, grid.bits) / s[c0 + j];
    }
  }
  return out;
}

float round_to_dtype(float v, DType dtype) {
  switch (dtype) {
    case DType::kBF16: return round_bf16(v);
    case DType::kF16: return round_f16(v);
    case DType::kF32: return v;
    default: break;
  }
  throw InvalidInput(fmt::format("a modified norm/router tensor must be BF16, F16 or F32, not {}", dtype_name(dtype)));
}

std::vector<uint8_t> encode_float_dtype(std::span<const float> v, DType dtype) {
  std::vector<uint8_t> out(v.size() * dtype_size(dtype));
  if (dtype == DType::kF32) {
    if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
    return out;
  }
  for (std::size_t i = 0; i < v.size(); ++i) {
    uint16_t h = 0;
    if (dtype == DType::kBF16) h = f32_to_bf16(v[i]);
    else if (dtype == DType::kF16) h = f32_to_f16(v[i]);
    else (void)round_to_dtype(0.0f, dtype);  // throws for non-float dtypes
    out[2 * i] = static_cast<uint8_t>(h & 0xff);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return out;
}

NormFold awq_fold_norm(std::span<const float> w, std::span<const float> s, DType dtype) {
  ANGELSLIM_CHECK(w.size() == s.size(), InvalidInput, "awq_fold_norm: norm has {} values, scales {}", w.size(),
                  s.size());
  NormFold f;
  f.weight.resize(w.size());
  f.s_eff.resize(w.size());
  for (std::size_t c = 0; c < w.size(); ++c) {
    const float wn = round_to_dtype(w[c] / s[c], dtype);
    f.weight[c] = wn;
    // s_eff = w / w' makes w' * s_eff == w up to one FP32 rounding, whatever the storage rounding did.
    f.s_eff[c] = (wn == 0.0f || w[c] == 0.0f) ? s[c] : w[c] / wn;
  }
  return f;
}

void scale_columns(std::span<float> w, int rows, int cols, std::span<const float> s) {
  ANGELSLIM_ASSERT(w.size() == static_cast<std::size_t>(rows) * cols && s.size() == static_cast<std::size_t>(cols));
  for (int r = 0; r < rows; ++r) {
    float* wr = w.data() + static_cast<std::size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) wr[c] *= s[c];
  }
}

void divide_rows(std::span<float> w, int rows, int cols, std::span<const float> s) {
  ANGELSLIM_ASSERT(w.size() == static_cast<std::size_t>(rows) * cols && s.size() == static_cast<std::size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    float* wr = w.data() + static_cast<std::size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) wr[c] /= s[r];
  }
}

double gram_error(std::span<const float> w, std::span<const float> w_hat, int rows, int cols,
                  std::span<const float> g) {
  ANGELSLIM_ASSERT(w.size() == w_hat.size() && w.size() == static_cast<std::size_t>(rows) * cols &&
                   g.size() == static_cast<std::size_t>(cols) * cols);
  std::vector<float> d(w.size()), e(w.size());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = w_hat[i] - w[i];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, cols, 1.0f, d.data(), cols, g.data(), cols, 0.0f,
              e.data(), cols);
  double sum = 0.0;
  for (std::size_t i = 0; i < d.size(); ++i) sum += static_cast<double>(d[i]) * e[i];
  return sum;
}

}  // namespace angelslim
