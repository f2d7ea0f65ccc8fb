// Integer quantization grids and the RTN baseline; see include/angelslim/quant/grid.h and SPEC 4.2.
#include "angelslim/quant/grid.h"

#include <algorithm>
#include <cmath>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"

namespace angelslim {

namespace {

void check_bits(int bits) {
  ANGELSLIM_CHECK(bits >= 2 && bits <= 8, InvalidInput, "quantization bits must be in [2, 8], got {}", bits);
}

const char* grid_name(GridKind kind) {
  switch (kind) {
    case GridKind::kGptqSym:
      return "gptq-sym";
    case GridKind::kGptqAsym:
      return "gptq-asym";
    case GridKind::kAwqAsym:
      return "awq-asym";
    case GridKind::kAwqSym:
      return "awq-sym";
  }
  return "?";
}

}  // namespace

float smallest_scale(ScaleDType dtype) {
  switch (dtype) {
    case ScaleDType::kBF16:
      return bf16_to_f32(1);  // 2^-133
    case ScaleDType::kF16:
      return f16_to_f32(1);  // 2^-24
    case ScaleDType::kF32:
      return bits_to_f32(1);  // 2^-149
  }
  throw Internal("unknown ScaleDType");
}

float round_scale(float s, ScaleDType dtype) {
  switch (dtype) {
    case ScaleDType::kBF16:
      return round_bf16(s);
    case ScaleDType::kF16:
      return round_f16(s);
    case ScaleDType::kF32:
      return s;
  }
  throw Internal("unknown ScaleDType");
}

GroupParams group_params_from_range(float min_w, float max_w, GridKind kind, int bits, ScaleDType dtype) {
  check_bits(bits);
  ANGELSLIM_CHECK(std::isfinite(min_w) && std::isfinite(max_w) && min_w <= max_w, InvalidInput,
                  "group range must be finite with min <= max, got [{}, {}]", min_w, max_w);
  const int qmax = (1 << bits) - 1;
  const float fq = static_cast<float>(qmax);
  const int half = 1 << (bits - 1);
  const float amax = std::max(std::fabs(min_w), std::fabs(max_w));
  GroupParams p{0.0f, 0};
  float asym_lo = 0.0f;  // GPTQ-asym x-
  switch (kind) {
    case GridKind::kGptqSym:
      p.scale = amax == 0.0f ? 2.0f / fq : 2.0f * amax / fq;
      p.zero = half;
      break;
    case GridKind::kGptqAsym: {
      float lo = std::min(0.0f, min_w);
      float hi = std::max(0.0f, max_w);
      if (lo == 0.0f && hi == 0.0f) {
        lo = -1.0f;
        hi = 1.0f;
      }
      p.scale = (hi - lo) / fq;
      asym_lo = lo;  // the zero is computed from the rounded scale below
      break;
    }
    case GridKind::kAwqAsym:
      p.scale = std::max(max_w - min_w, 1e-5f) / fq;
      break;
    case GridKind::kAwqSym:
      p.scale = std::max(amax, 1e-5f) / static_cast<float>(half - 1);
      p.zero = half;
      break;
  }
  // A tiny but non-zero group (e.g. |w| < 2.2e-7 with F16 scales) would round its scale to 0; it gets the smallest
  // positive scale of the dtype instead (S only grows, so no code clips and |dequant - w| <= S/2).
  if (const float exact = p.scale; std::isfinite(exact) && exact > 0.0f) {
    p.scale = round_scale(exact, dtype);
    if (p.scale == 0.0f) p.scale = smallest_scale(dtype);
  } else {
    p.scale = round_scale(exact, dtype);
  }
  ANGELSLIM_CHECK(std::isfinite(p.scale) && p.scale > 0.0f, InvalidInput,
                  "{} scale for group range [{}, {}] is {} after rounding to the scale dtype (expected finite > 0)",
                  grid_name(kind), min_w, max_w, p.scale);
  if (kind == GridKind::kGptqAsym) {
    p.zero = static_cast<int>(std::clamp(std::nearbyint(-asym_lo / p.scale), 0.0f, fq));
  } else if (kind == GridKind::kAwqAsym) {
    p.zero = static_cast<int>(std::clamp(-std::nearbyint(min_w / p.scale), 0.0f, fq));
  }
  return p;
}

GroupParams compute_group_params(std::span<const float> w, GridKind kind, int bits, ScaleDType dtype) {
  ANGELSLIM_CHECK(!w.empty(), InvalidInput, "quantization group is empty");
  float lo = w[0];
  float hi = w[0];
  for (float v : w) {
    ANGELSLIM_CHECK(std::isfinite(v), InvalidInput, "weight {} is not finite", v);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return group_params_from_range(lo, hi, kind, bits, dtype);
}

int resolve_group_size(int group_size, int cols) {
  const int g = group_size == -1 ? cols : group_size;
  ANGELSLIM_CHECK(g >= 1 && cols % g == 0, InvalidInput,
                  "group_size {} must be -1 or a positive divisor of the input dimension {}", group_size, cols);
  return g;
}

QuantizedMatrix rtn_quantize(std::span<const float> w, int rows, int cols, const GridSpec& spec) {
  check_bits(spec.bits);
  ANGELSLIM_CHECK(rows >= 1 && cols >= 1 && w.size() == static_cast<std::size_t>(rows) * cols, InvalidInput,
                  "rtn_quantize: weight has {} elements, expected rows*cols = {}*{}", w.size(), rows, cols);
  QuantizedMatrix out;
  out.rows = rows;
  out.cols = cols;
  out.group_size = resolve_group_size(spec.group_size, cols);
  out.n_groups = cols / out.group_size;
  const std::size_t n = w.size();
  out.codes.resize(n);
  out.dequant.resize(n);
  out.scales.resize(static_cast<std::size_t>(rows) * out.n_groups);
  out.zeros.resize(out.scales.size());
  const int g = out.group_size;
  for (int r = 0; r < rows; ++r) {
    for (int gi = 0; gi < out.n_groups; ++gi) {
      const std::size_t base = static_cast<std::size_t>(r) * cols + static_cast<std::size_t>(gi) * g;
      const GroupParams p = compute_group_params(w.subspan(base, g), spec.kind, spec.bits, spec.scale_dtype);
      out.scales[static_cast<std::size_t>(r) * out.n_groups + gi] = p.scale;
      out.zeros[static_cast<std::size_t>(r) * out.n_groups + gi] = p.zero;
      for (int j = 0; j < g; ++j) {
        const int q = quantize_code(w[base + j], p, spec.bits);
        out.codes[base + j] = static_cast<uint8_t>(q);
        out.dequant[base + j] = dequantize_code(q, p);
      }
    }
  }
  return out;
}

}  // namespace angelslim
