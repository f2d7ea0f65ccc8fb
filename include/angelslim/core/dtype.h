// Element types of checkpoint tensors and scalar conversions (bf16, f16, fp8 e4m3fn <-> f32).
// All conversions to narrow types round to nearest, ties to even (SPEC 4.3.1).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace angelslim {

enum class DType { kBF16, kF16, kF32, kF64, kI8, kI16, kI32, kI64, kU8, kBool, kF8E4M3, kF8E5M2 };

// Size of one element in bytes.
std::size_t dtype_size(DType t);
// safetensors spelling ("BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
// Parses a safetensors dtype string; returns false when unknown.
bool parse_dtype(std::string_view s, DType* out);

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }
// Round-to-nearest-even; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
// f32 -> nearest bf16 value, as f32.
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // RNE, overflow to inf
inline float round_f16(float f) { return f16_to_f32(f32_to_f16(f)); }

// e4m3fn: bias 7, max 448, no inf, 0x7f/0xff NaN. Quantize saturates to +-448 (SATFINITE).
float fp8e4m3_to_f32(uint8_t b);
uint8_t f32_to_fp8e4m3(float f);
inline float round_fp8e4m3(float f) { return fp8e4m3_to_f32(f32_to_fp8e4m3(f)); }
constexpr float kFp8E4M3Max = 448.0f;

// Converts n elements of type `t` at `src` to f32.
void convert_to_f32(DType t, const void* src, float* dst, std::size_t n);

}  // namespace angelslim
