// FP8 (e4m3fn) weight quantization, per tensor or per output channel (SPEC 4.3.2):
// scale = max(amax, 1e-12) / 448, W_fp8 = e4m3(W / scale) with the division in FP32, saturating.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace angelslim {

constexpr float kFp8AmaxFloor = 1e-12f;

// max |x| over a buffer. x: [n] f32; throws InvalidInput on NaN/Inf (the message names `what`).
float abs_max(std::span<const float> x, const char* what = "tensor");

// Per-row max |w|. w: [rows, cols] f32 row-major; returns [rows] f32.
std::vector<float> abs_max_rows(std::span<const float> w, int rows, int cols);

// max(amax, 1e-12) / 448 in FP32.
float fp8_scale_from_amax(float amax);

// An FP8 weight and its FP32 scale(s).
struct Fp8Weight {
  std::vector<uint8_t> data;  // [rows, cols] e4m3fn bytes, row-major (not transposed)
  std::vector<float> scale;   // per tensor: [1]; per channel: [rows] (stored as [out, 1])
};

// Quantizes with given scales. w: [rows, cols] f32 row-major, finite; scales: [1] (per tensor) or [rows]
// (per channel), each finite > 0. Used directly when q/k/v or gate/up share one scale (SPEC 4.3.3).
Fp8Weight quantize_fp8_with_scales(std::span<const float> w, int rows, int cols, std::span<const float> scales);

// scale = fp8_scale_from_amax(max |W|) over the whole tensor.
Fp8Weight quantize_fp8_per_tensor(std::span<const float> w, int rows, int cols);

// scale[r] = fp8_scale_from_amax(max |W[r, :]|).
Fp8Weight quantize_fp8_per_channel(std::span<const float> w, int rows, int cols);

// ||w - d||_F / ||w||_F in FP64 (0 when w is all zero): the per-linear error the FP8 report records.
float fp8_rel_error(std::span<const float> w, std::span<const float> d);

// fp8 * scale back to f32; returns [rows, cols] f32.
std::vector<float> dequantize_fp8(const Fp8Weight& q, int rows, int cols);

}  // namespace angelslim
