// FP8 weight quantization; see include/angelslim/quant/fp8_weight.h and SPEC 4.3.
#include "angelslim/quant/fp8_weight.h"

#include <algorithm>
#include <cmath>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"

namespace angelslim {

namespace {
void check_shape(std::span<const float> w, int rows, int cols) {
  ANGELSLIM_CHECK(rows >= 1 && cols >= 1 && w.size() == static_cast<std::size_t>(rows) * cols, InvalidInput,
                  "fp8 weight has {} elements, expected rows*cols = {}*{}", w.size(), rows, cols);
}
}  // namespace

float abs_max(std::span<const float> x, const char* what) {
  float m = 0.0f;
  for (std::size_t i = 0; i < x.size(); ++i) {
    ANGELSLIM_CHECK(std::isfinite(x[i]), InvalidInput, "{} element {} is {} (expected finite)", what, i, x[i]);
    m = std::max(m, std::fabs(x[i]));
  }
  return m;
}

std::vector<float> abs_max_rows(std::span<const float> w, int rows, int cols) {
  check_shape(w, rows, cols);
  std::vector<float> out(rows);
  for (int r = 0; r < rows; ++r) out[r] = abs_max(w.subspan(static_cast<std::size_t>(r) * cols, cols), "weight row");
  return out;
}

float fp8_scale_from_amax(float amax) {
  ANGELSLIM_CHECK(std::isfinite(amax) && amax >= 0.0f, InvalidInput, "amax {} must be finite and >= 0", amax);
  return std::max(amax, kFp8AmaxFloor) / kFp8E4M3Max;
}

Fp8Weight quantize_fp8_with_scales(std::span<const float> w, int rows, int cols, std::span<const float> scales) {
  check_shape(w, rows, cols);
  ANGELSLIM_CHECK(scales.size() == 1 || scales.size() == static_cast<std::size_t>(rows), InvalidInput,
                  "fp8 scales have {} elements, expected 1 (per tensor) or {} (per channel)", scales.size(), rows);
  for (float s : scales)
    ANGELSLIM_CHECK(std::isfinite(s) && s > 0.0f, InvalidInput, "fp8 weight scale {} must be finite and > 0", s);
  Fp8Weight out;
  out.scale.assign(scales.begin(), scales.end());
  out.data.resize(w.size());
  for (int r = 0; r < rows; ++r) {
    const float s = scales.size() == 1 ? scales[0] : scales[r];
    const std::size_t base = static_cast<std::size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) {
      const float v = w[base + c];
      ANGELSLIM_CHECK(std::isfinite(v), InvalidInput, "fp8 weight element [{}, {}] is {} (expected finite)", r, c, v);
      out.data[base + c] = f32_to_fp8e4m3(v / s);  // saturates beyond +-448
    }
  }
  return out;
}

Fp8Weight quantize_fp8_per_tensor(std::span<const float> w, int rows, int cols) {
  check_shape(w, rows, cols);
  const float s = fp8_scale_from_amax(abs_max(w, "fp8 weight"));
  return quantize_fp8_with_scales(w, rows, cols, std::span<const float>(&s, 1));
}

Fp8Weight quantize_fp8_per_channel(std::span<const float> w, int rows, int cols) {
  std::vector<float> s = abs_max_rows(w, rows, cols);
  for (float& v : s) v = fp8_scale_from_amax(v);
  return quantize_fp8_with_scales(w, rows, cols, s);
}

float fp8_rel_error(std::span<const float> w, std::span<const float> d) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    num += double(w[i] - d[i]) * double(w[i] - d[i]);
    den += double(w[i]) * double(w[i]);
  }
  return den > 0 ? static_cast<float>(std::sqrt(num / den)) : 0.0f;
}

std::vector<float> dequantize_fp8(const Fp8Weight& q, int rows, int cols) {
  ANGELSLIM_CHECK(q.data.size() == static_cast<std::size_t>(rows) * cols &&
                      (q.scale.size() == 1 || q.scale.size() == static_cast<std::size_t>(rows)),
                  InvalidInput, "fp8 weight has {} bytes and {} scales, expected {}*{} and 1 or {}", q.data.size(),
                  q.scale.size(), rows, cols, rows);
  std::vector<float> out(q.data.size());
  for (int r = 0; r < rows; ++r) {
    const float s = q.scale.size() == 1 ? q.scale[0] : q.scale[r];
    const std::size_t base = static_cast<std::size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) out[base + c] = fp8e4m3_to_f32(q.data[base + c]) * s;
  }
  return out;
}

}  // namespace angelslim
