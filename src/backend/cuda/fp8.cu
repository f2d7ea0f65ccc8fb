// Kernels of the GPU FP8 weight quantization (see fp8_kernels.h): per-row abs-max, then e4m3 codes and the FP64
// error sums in one pass. The conversion is angelslim::f32_to_fp8e4m3 (src/core/dtype.cpp) written again operation
// for operation -- not the __nv_cvt_float_to_fp8 intrinsic -- so that every input maps to the CPU's byte.
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/fp8_kernels.h"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda::kernels {

namespace {

// f32_to_fp8e4m3: NaN -> 0x7f; |f| clamped to 448; below 2^-6 multiples of 2^-9 (the 8th rounds up to the smallest
// normal); else 3 mantissa bits, rounded to nearest even (rintf in the default rounding mode, as std::nearbyint).
__device__ __forceinline__ uint8_t e4m3_code(float f) {
  if (isnan(f)) return 0x7f;
  const unsigned sign = signbit(f) ? 0x80u : 0u;
  float a = fabsf(f);
  if (a > 448.0f) a = 448.0f;
  if (a < 0.015625f) {
    const int m = static_cast<int>(rintf(__fmul_rn(a, 512.0f)));
    if (m == 8) return static_cast<uint8_t>(sign | 0x08u);
    return static_cast<uint8_t>(sign | static_cast<unsigned>(m));
  }
  int e = 0;
  const float fr = frexpf(a, &e);  // a = fr * 2^e, fr in [0.5, 1)
  e -= 1;
  int m = static_cast<int>(rintf(__fmul_rn(__fsub_rn(__fmul_rn(2.0f, fr), 1.0f), 8.0f)));
  if (m == 8) {
    m = 0;
    ++e;
  }
  return static_cast<uint8_t>(sign | (static_cast<unsigned>(e + 7) << 3) | static_cast<unsigned>(m));
}

// fp8e4m3_to_f32: exact.
__device__ __forceinline__ float e4m3_code_value(unsigned b) {
  const unsigned E = (b >> 3) & 0xfu, m = b & 0x7u;
  if (E == 15 && m == 7) return __uint_as_float(0x7fc00000u);
  const float v = E == 0 ? __fmul_rn(static_cast<float>(m), 0.001953125f) : __uint_as_float(((E + 120u) << 23) | (m << 20));
  return (b & 0x80u) ? -v : v;
}

template <bool kBf16>
__device__ __forceinline__ float weight_at(const float* w32, const uint16_t* w16, int64_t i) {
  if constexpr (kBf16)
    return bf16_bits_to_f32(w16[i]);
  else
    return w32[i];
}

// One block per row.
template <bool kBf16>
__global__ void row_abs_max_kernel(const float* w32, const uint16_t* w16, int64_t cols, float* amax) {
  __shared__ unsigned int red[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  unsigned int m = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    m = max(m, __float_as_uint(fabsf(weight_at<kBf16>(w32, w16, base + c))));
  m = block_max_bits(m, red);
  if (threadIdx.x == 0) amax[blockIdx.x] = __uint_as_float(m);
}

// One block per row. The squared terms are exact in FP64 (24-bit significands), so only the summation order differs
// from the CPU's rel_error.
template <bool kBf16>
__global__ void quantize_rows_kernel(const float* w32, const uint16_t* w16, int64_t cols, const float* scale,
                                     bool per_row, uint8_t* q, double* err) {
  __shared__ double red[2][32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  const float s = scale[per_row ? blockIdx.x : 0];
  double num = 0.0, den = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = weight_at<kBf16>(w32, w16, base + c);
    const uint8_t code = e4m3_code(__fdiv_rn(v, s));
    q[base + c] = code;
    const double d = static_cast<double>(__fsub_rn(v, __fmul_rn(e4m3_code_value(code), s)));
    num += d * d;
    den += static_cast<double>(v) * static_cast<double>(v);
  }
  for (int o = 16; o > 0; o >>= 1) {
    num += __shfl_xor_sync(0xffffffffu, num, o);
    den += __shfl_xor_sync(0xffffffffu, den, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    red[0][warp] = num;
    red[1][warp] = den;
  }
  __syncthreads();
  if (warp == 0) {
    const bool live = lane < static_cast<int>(blockDim.x >> 5);
    num = live ? red[0][lane] : 0.0;
    den = live ? red[1][lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) {
      num += __shfl_xor_sync(0xffffffffu, num, o);
      den += __shfl_xor_sync(0xffffffffu, den, o);
    }
    if (lane == 0) {
      atomicAdd(err, num);
      atomicAdd(err + 1, den);
    }
  }
}

__global__ void encode_kernel(const float* x, int64_t n, uint8_t* q) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
    q[i] = e4m3_code(x[i]);
}

}  // namespace

cudaError_t fp8_row_abs_max(cudaStream_t s, const float* w32, const uint16_t* w16, int64_t rows, int64_t cols,
                            float* amax) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (w16)
    row_abs_max_kernel<true><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(nullptr, w16, cols, amax);
  else
    row_abs_max_kernel<false><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(w32, nullptr, cols, amax);
  return cudaGetLastError();
}

cudaError_t fp8_quantize_rows(cudaStream_t s, const float* w32, const uint16_t* w16, int64_t rows, int64_t cols,
                              const float* scale, bool per_row, uint8_t* q, double* err) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (w16)
    quantize_rows_kernel<true><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(nullptr, w16, cols, scale, per_row, q,
                                                                               err);
  else
    quantize_rows_kernel<false><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(w32, nullptr, cols, scale, per_row, q,
                                                                                err);
  return cudaGetLastError();
}

cudaError_t fp8_encode(cudaStream_t s, int sm, const float* x, int64_t n, uint8_t* q) {
  if (n <= 0) return cudaSuccess;
  encode_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(x, n, q);
  return cudaGetLastError();
}

}  // namespace angelslim::cuda::kernels
