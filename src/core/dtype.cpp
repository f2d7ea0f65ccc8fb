// Scalar dtype conversions; see include/angelslim/core/dtype.h.
#include "angelslim/core/dtype.h"

#include <cmath>

#include "angelslim/core/error.h"

namespace angelslim {

namespace {
struct DTypeInfo {
  DType t;
  std::string_view name;
  std::size_t size;
};
constexpr DTypeInfo kInfos[] = {
    {DType::kBF16, "BF16", 2}, {DType::kF16, "F16", 2},         {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},   {DType::kI8, "I8", 1},           {DType::kI16, "I16", 2},
    {DType::kI32, "I32", 4},   {DType::kI64, "I64", 8},         {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1}, {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
};
const DTypeInfo& info(DType t) {
  for (const auto& i : kInfos)
    if (i.t == t) return i;
  throw Internal("unknown dtype enum");
}
}  // namespace

std::size_t dtype_size(DType t) { return info(t).size; }
std::string_view dtype_name(DType t) { return info(t).name; }
bool parse_dtype(std::string_view s, DType* out) {
  for (const auto& i : kInfos)
    if (i.name == s) {
      *out = i.t;
      return true;
    }
  return false;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    // zero or subnormal: man * 2^-24
    float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;  // rounds to inf
  if (a < 6.103515625e-05f) {                 // subnormal range: multiples of 2^-24
    const float q = std::nearbyint(a * 16777216.0f);
    return sign | static_cast<uint16_t>(q);   // q == 1024 becomes the smallest normal, as intended
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  // 11 significant bits: mantissa integer in [1024, 2048)
  float q = std::nearbyint(m * 2048.0f);
  if (q == 2048.0f) {
    q = 1024.0f;
    ++e;
  }
  const uint32_t E = static_cast<uint32_t>(e - 1 + 15);
  if (E >= 31) return sign | 0x7c00u;
  return sign | static_cast<uint16_t>((E << 10) | (static_cast<uint32_t>(q) - 1024u));
}

float fp8e4m3_to_f32(uint8_t b) {
  const bool neg = b & 0x80u;
  const int E = (b >> 3) & 0xf;
  const int m = b & 0x7;
  float v;
  if (E == 15 && m == 7) return std::nanf("");
  if (E == 0)
    v = std::ldexp(static_cast<float>(m), -9);
  else
    v = std::ldexp(1.0f + static_cast<float>(m) / 8.0f, E - 7);
  return neg ? -v : v;
}

uint8_t f32_to_fp8e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80u : 0u;
  float a = std::fabs(f);
  if (a > kFp8E4M3Max) a = kFp8E4M3Max;
  if (a < 0.015625f) {  // subnormal: multiples of 2^-9
    const int m = static_cast<int>(std::nearbyint(a * 512.0f));
    if (m == 8) return sign | 0x08u;  // rounds up to the smallest normal
    return sign | static_cast<uint8_t>(m);
  }
  int e;
  const float fr = std::frexp(a, &e);  // a = fr * 2^e, fr in [0.5,1)
  e -= 1;                              // a = (2 fr) * 2^e, 2fr in [1,2)
  int m = static_cast<int>(std::nearbyint((2.0f * fr - 1.0f) * 8.0f));
  if (m == 8) {
    m = 0;
    ++e;
  }
  const int E = e + 7;
  return sign | static_cast<uint8_t>((E << 3) | m);
}

void convert_to_f32(DType t, const void* src, float* dst, std::size_t n) {
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16: {
      const auto* p = static_cast<const uint16_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(p[i]);
      return;
    }
    case DType::kF16: {
      const auto* p = static_cast<const uint16_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(p[i]);
      return;
    }
    case DType::kF8E4M3: {
      const auto* p = static_cast<const uint8_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = fp8e4m3_to_f32(p[i]);
      return;
    }
    case DType::kF64: {
      const auto* p = static_cast<const double*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i]);
      return;
    }
    default:
      throw Unsupported(fmt::format("cannot convert dtype {} to F32", dtype_name(t)));
  }
}

}  // namespace angelslim
