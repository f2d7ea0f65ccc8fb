// NaN/Inf guards; see include/angelslim/pipeline/nonfinite.h.
#include "angelslim/pipeline/nonfinite.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "angelslim/core/error.h"
#include "angelslim/core/parallel.h"

namespace angelslim {

namespace {

// First element whose exponent bits are all ones (Inf or NaN) in little-endian words of type U.
template <typename U>
int64_t scan_bits(const uint8_t* p, std::size_t n, U exp_mask) {
  constexpr std::size_t kBlock = 4096;
  U buf[kBlock];
  for (std::size_t i0 = 0; i0 < n; i0 += kBlock) {
    const std::size_t m = std::min(kBlock, n - i0);
    std::memcpy(buf, p + i0 * sizeof(U), m * sizeof(U));
    U any = 0;
    for (std::size_t i = 0; i < m; ++i) any |= static_cast<U>((buf[i] & exp_mask) == exp_mask);
    if (!any) continue;
    for (std::size_t i = 0; i < m; ++i)
      if ((buf[i] & exp_mask) == exp_mask) return static_cast<int64_t>(i0 + i);
  }
  return -1;
}

std::string index_text(const std::vector<int64_t>& shape, int64_t flat) {
  if (shape.empty()) return "[]";
  std::vector<int64_t> idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  std::string s = "[";
  for (std::size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}

// n elements of `dtype` at p.
int64_t first_nonfinite_in(DType dtype, const uint8_t* p, std::size_t n) {
  switch (dtype) {
    case DType::kBF16:
      return scan_bits<uint16_t>(p, n, 0x7f80u);
    case DType::kF16:
      return scan_bits<uint16_t>(p, n, 0x7c00u);
    case DType::kF32:
      return scan_bits<uint32_t>(p, n, 0x7f800000u);
    case DType::kF64:
      return scan_bits<uint64_t>(p, n, 0x7ff0000000000000ull);
    default:
      return -1;
  }
}

}  // namespace

int64_t first_nonfinite(const TensorView& t) {
  const std::size_t n = static_cast<std::size_t>(t.numel());
  // Large tensors (an embedding: hundreds of MB) in pieces on several threads; the first hit of the earliest piece.
  constexpr std::size_t kPiece = std::size_t{16} << 20;  // elements
  const std::size_t pieces = (n + kPiece - 1) / kPiece;
  if (pieces <= 1) return first_nonfinite_in(t.dtype, t.data, n);
  std::vector<int64_t> hit(pieces, -1);
  const std::size_t esize = dtype_size(t.dtype);
  parallel_for(static_cast<int64_t>(pieces), [&](int64_t i) {
    const std::size_t b = static_cast<std::size_t>(i) * kPiece;
    const int64_t r = first_nonfinite_in(t.dtype, t.data + b * esize, std::min(kPiece, n - b));
    if (r >= 0) hit[static_cast<std::size_t>(i)] = static_cast<int64_t>(b) + r;
  });
  for (const int64_t h : hit)
    if (h >= 0) return h;
  return -1;
}

void check_finite(const TensorView& t) {
  const int64_t i = first_nonfinite(t);
  if (i < 0) return;
  float v = 0.0f;
  convert_to_f32(t.dtype, t.data + static_cast<std::size_t>(i) * dtype_size(t.dtype), &v, 1);
  throw InvalidInput(fmt::format("{}: tensor '{}' element {} is {} (pass --allow-nonfinite to skip this check)", t.file,
                                 t.name, index_text(t.shape, i), v));
}

void check_finite_activations(std::span<const float> x, int64_t d_model, std::span<const int64_t> sample_offsets,
                              int64_t layer) {
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::isfinite(x[i])) continue;
    const int64_t token = static_cast<int64_t>(i) / d_model;
    const auto it = std::upper_bound(sample_offsets.begin(), sample_offsets.end(), token);
    const int64_t sample = std::max<int64_t>(0, static_cast<int64_t>(it - sample_offsets.begin()) - 1);
    const int64_t begin = sample_offsets.empty() ? 0 : sample_offsets[static_cast<std::size_t>(sample)];
    throw InvalidInput(fmt::format(
        "model.layers.{}: non-finite calibration activation ({}) at the layer's output, sample {} token {} channel {} "
        "(pass --allow-nonfinite to skip this check)",
        layer, x[i], sample, token - begin, static_cast<int64_t>(i) % d_model));
  }
}

}  // namespace angelslim
