// Device helpers shared by the CUDA kernels: bf16 rounding with the exact semantics of angelslim::round_bf16
// (round to nearest even on the bit pattern, NaN stays a quiet NaN), fp8 e4m3 conversion, launch shapes.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace angelslim::cuda::kernels {

constexpr int kThreads = 256;  // block size of the elementwise kernels

__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}
__device__ __forceinline__ float round_bf16(float f) { return bf16_bits_to_f32(f32_to_bf16_bits(f)); }
__device__ __forceinline__ float maybe_round(float f, bool rb) { return rb ? round_bf16(f) : f; }

// Rounds a quantization scale to its storage dtype (0: bf16, 1: f16, 2: f32), as angelslim::round_scale.
__device__ __forceinline__ float round_scale_dev(float s, int scale_dtype) {
  if (scale_dtype == 0) return round_bf16(s);                     // kBF16
  if (scale_dtype == 1) return __half2float(__float2half_rn(s));  // kF16
  return s;                                                       // kF32
}

// The smallest positive value of a scale dtype (grid.cpp smallest_scale).
__device__ __forceinline__ float smallest_scale_dev(int scale_dtype) {
  if (scale_dtype == 0) return __uint_as_float(0x10000u);  // bf16 2^-133
  if (scale_dtype == 1) return 5.9604644775390625e-8f;      // f16 2^-24
  return __uint_as_float(1u);                              // f32 2^-149
}

// e4m3fn code of v (round to nearest even, saturating to ±448; NaN -> NaN) and its value.
__device__ __forceinline__ float e4m3_value(float v) {
  const __nv_fp8_storage_t q = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  const __half_raw h = __nv_cvt_fp8_to_halfraw(q, __NV_E4M3);
  return __half2float(__half(h));
}

// Block-wide sum of one value per thread (blockDim.x a multiple of 32, ≤ 1024); every thread gets the sum.
__device__ __forceinline__ float block_sum(float v, float* shared32) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  __syncthreads();  // shared32 may still be read by a previous call
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  v = lane < n_warps ? shared32[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide max of non-negative floats' bit patterns (they order like the floats): every thread passes its own m,
// thread 0 gets the result (others: unspecified). red: __shared__ unsigned int[32]; blockDim.x a multiple of 32.
__device__ inline unsigned int block_max_bits(unsigned int m, unsigned int* red) {
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < static_cast<int>(blockDim.x >> 5) ? red[lane] : 0u;
    for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  }
  return m;
}

}  // namespace angelslim::cuda::kernels
