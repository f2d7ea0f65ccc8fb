// Integer quantization grids of SPEC 4.2 (GPTQ-sym, GPTQ-asym, AWQ-asym, AWQ-sym) and the RTN baseline.
// Scales are rounded to their storage dtype before codes are computed; all arithmetic is FP32.
#pragma once
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace angelslim {

// The four grids of SPEC 4.2 (also 4.5.7 for the AWQ ones).
enum class GridKind {
  kGptqSym,   // S = 2*amax/Q (amax = 0 -> S = 2/Q), Z = 2^(b-1)
  kGptqAsym,  // S = (x+ - x-)/Q with x- = min(0, min w), x+ = max(0, max w); Z = clamp(RNE(-x-/S), 0, Q)
  kAwqAsym,   // S = max(max w - min w, 1e-5)/Q, Z = clamp(-RNE(min w/S), 0, Q)
  kAwqSym,    // S = max(amax, 1e-5)/(2^(b-1) - 1), Z = 2^(b-1)
};

// Storage dtype of the scales; S is rounded (RNE) to it before any code is computed.
enum class ScaleDType { kBF16, kF16, kF32 };

// Parameters of one quantization group: w ~ (q - zero) * scale.
struct GroupParams {
  float scale;  // > 0, exactly representable in the storage ScaleDType
  int zero;     // in [0, 2^bits - 1] (sym grids: 2^(bits-1))
};

// A grid with its bit width, group size and scale dtype.
struct GridSpec {
  GridKind kind = GridKind::kGptqSym;
  int bits = 4;          // 2..8
  int group_size = 128;  // columns per group along the input dim; -1 = per channel
  ScaleDType scale_dtype = ScaleDType::kBF16;
};

// Rounds a scale to its storage dtype (RNE).
float round_scale(float s, ScaleDType dtype);
// The smallest positive value of a scale dtype (its smallest subnormal).
float smallest_scale(ScaleDType dtype);

// Group parameters from the group's min and max weight (min_w <= max_w, both finite). The asymmetric zeros
// are computed with the already rounded scale. A positive scale that rounds to 0 becomes smallest_scale(dtype).
// Throws InvalidInput when the rounded scale is not finite (e.g. F16 overflow).
GroupParams group_params_from_range(float min_w, float max_w, GridKind kind, int bits, ScaleDType dtype);

// Group parameters from the weights of one group. w: [n] f32, finite (InvalidInput otherwise), n >= 1.
GroupParams compute_group_params(std::span<const float> w, GridKind kind, int bits, ScaleDType dtype);

// code = clamp(RNE(w / S) + Z, 0, 2^bits - 1), division in FP32, RNE via std::nearbyint.
inline int quantize_code(float w, GroupParams p, int bits) {
  const int qmax = (1 << bits) - 1;
  const float r = std::nearbyint(w / p.scale);
  // Clamp in float first so that huge ratios cannot overflow the int conversion.
  const float lo = static_cast<float>(-p.zero);
  const float hi = static_cast<float>(qmax - p.zero);
  const float c = r < lo ? lo : (r > hi ? hi : r);
  return static_cast<int>(c) + p.zero;
}

// (code - Z) * S in FP32.
inline float dequantize_code(int code, GroupParams p) { return static_cast<float>(code - p.zero) * p.scale; }

// dequantize_code(quantize_code(w)).
inline float quantize_dequantize(float w, GroupParams p, int bits) {
  return dequantize_code(quantize_code(w, p, bits), p);
}

// Effective group size for a matrix with `cols` input columns (-1 -> cols). Throws InvalidInput unless
// 1 <= g and cols % g == 0.
int resolve_group_size(int group_size, int cols);

// Result of quantizing a weight matrix W [rows, cols] (row-major, PyTorch [out, in] layout).
struct QuantizedMatrix {
  int rows = 0;
  int cols = 0;
  int group_size = 0;          // resolved (per channel: cols)
  int n_groups = 0;            // cols / group_size
  std::vector<uint8_t> codes;  // [rows, cols] u8, code of W[r, c]
  std::vector<float> scales;   // [rows, n_groups] f32 (values representable in the scale dtype)
  std::vector<int32_t> zeros;  // [rows, n_groups] i32, in [0, 2^bits - 1]
  std::vector<float> dequant;  // [rows, cols] f32, (code - Z) * S
};

// Round-to-nearest quantization of a whole matrix with groups of consecutive input columns.
// w: [rows, cols] f32 row-major, finite. The RTN baseline of SPEC 4.2 is spec.kind = kAwqAsym.
QuantizedMatrix rtn_quantize(std::span<const float> w, int rows, int cols, const GridSpec& spec);

}  // namespace angelslim
