// Kernels of the GPU AWQ search (backend/cuda/awq_kernels.h; the CPU originals are src/quant/awq.cpp,
// awq_clip.cpp and grid.cpp). Grid and rounding arithmetic uses explicit _rn intrinsics so that it matches the host
// code operation for operation.
#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>

#include "backend/cuda/awq_kernels.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda::kernels {

namespace {

// group_params_from_range for the AWQ grids (kind 0: asym, 1: sym). False when the rounded scale is not finite > 0.
__device__ bool awq_params(float min_w, float max_w, int kind, int bits, int scale_dtype, float* scale, int* zero) {
  const int qmax = (1 << bits) - 1;
  const float fq = static_cast<float>(qmax);
  const int half = 1 << (bits - 1);
  float s;
  if (kind == 0) {
    s = __fdiv_rn(fmaxf(__fsub_rn(max_w, min_w), 1e-5f), fq);
  } else {
    const float amax = fmaxf(fabsf(min_w), fabsf(max_w));
    s = __fdiv_rn(fmaxf(amax, 1e-5f), static_cast<float>(half - 1));
  }
  if (isfinite(s) && s > 0.0f) {
    const float exact = s;
    s = round_scale_dev(exact, scale_dtype);
    // grid.cpp: a positive scale that rounds to 0 becomes the dtype's smallest positive value.
    if (s == 0.0f) s = smallest_scale_dev(scale_dtype);
  } else {
    s = round_scale_dev(s, scale_dtype);
  }
  *zero = half;
  *scale = 1.0f;
  if (!(isfinite(s) && s > 0.0f)) return false;
  if (kind == 0) {
    const float z = -rintf(__fdiv_rn(min_w, s));
    *zero = static_cast<int>(z < 0.0f ? 0.0f : (z > fq ? fq : z));
  }
  *scale = s;
  return true;
}

// quantize_dequantize (grid.h).
__device__ __forceinline__ float qdq(float w, float scale, int zero, int qmax) {
  const float r = rintf(__fdiv_rn(w, scale));
  const float lo = static_cast<float>(-zero), hi = static_cast<float>(qmax - zero);
  const float c = r < lo ? lo : (r > hi ? hi : r);
  const int code = static_cast<int>(c) + zero;
  return __fmul_rn(static_cast<float>(code - zero), scale);
}

__device__ __forceinline__ float warp_min(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Block-wide min / max (blockDim.x a multiple of 32); every thread gets the result.
__device__ __forceinline__ float block_min(float v, float* sh) {
  v = warp_min(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : FLT_MAX;
  return warp_min(v);
}
__device__ __forceinline__ float block_max(float v, float* sh) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : -FLT_MAX;
  return warp_max(v);
}

__global__ void abs_sum_columns_kernel(const float* x, int64_t rows, int64_t cols, int64_t rows_per_block,
                                       double* sum) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = blockIdx.y * rows_per_block, r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  double acc = 0.0;
  for (int64_t r = r0; r < r1; ++r) acc += fabs(static_cast<double>(x[r * cols + c]));
  if (r1 > r0) atomicAdd(sum + c, acc);
}

__global__ void scatter_rows_kernel(const float* x, int64_t d, const int64_t* index, int64_t m, float* out) {
  const int64_t total = m * d;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t r = i / d, j = i - r * d;
    out[index[r] * d + j] = x[i];
  }
}

__global__ void divide_columns_kernel(float* x, int64_t rows, int64_t cols, const float* s) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
    x[i] = __fdiv_rn(x[i], s[i % cols]);
}

// One warp per (row, group).
__global__ void fake_quant_kernel(const float* w, int rows, int cols, const float* s, int g, int kind, int bits,
                                  int scale_dtype, float* out, int* flag) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const int ng = cols / g;
  if (warp >= static_cast<int64_t>(rows) * ng) return;
  const int64_t r = warp / ng;
  const int gi = static_cast<int>(warp - r * ng);
  const float* wr = w + r * cols + static_cast<int64_t>(gi) * g;
  const float* sg = s + static_cast<int64_t>(gi) * g;
  float* o = out + r * cols + static_cast<int64_t>(gi) * g;
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = lane; j < g; j += 32) {
    const float v = __fmul_rn(wr[j], sg[j]);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  lo = warp_min(lo);
  hi = warp_max(hi);
  float scale;
  int zero;
  if (!awq_params(lo, hi, kind, bits, scale_dtype, &scale, &zero) && lane == 0) atomicOr(flag, 1);
  const int qmax = (1 << bits) - 1;
  for (int j = lane; j < g; j += 32) o[j] = __fdiv_rn(qdq(__fmul_rn(wr[j], sg[j]), scale, zero, qmax), sg[j]);
}

__global__ void sq_diff_kernel(const float* a, const float* b, int64_t n, double* out) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const double d = static_cast<double>(__fsub_rn(a[i], b[i]));
    acc += d * d;
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) atomicAdd(out, acc);
}

constexpr int kClipThreads = 128;
constexpr int kClipSteps = 10;  // kAwqClipSteps

// One block per (row, group): the ten shrink factors of the clip search, err = dᵀ G d.
__global__ void __launch_bounds__(kClipThreads)
    clip_kernel(float* w, int rows, int cols, int g, const float* gram, int kind, int bits, int scale_dtype,
                float* best_m, int* flag) {
  extern __shared__ float d[];  // [g]
  __shared__ float red[32];
  const int ng = cols / g;
  const int64_t r = blockIdx.x / ng;
  const int gi = static_cast<int>(blockIdx.x - r * ng);
  float* wr = w + r * cols + static_cast<int64_t>(gi) * g;
  const float* G = gram + static_cast<int64_t>(gi) * g * g;
  const int qmax = (1 << bits) - 1;
  float a = 0.0f;
  for (int j = threadIdx.x; j < g; j += blockDim.x) a = fmaxf(a, fabsf(wr[j]));
  const float m0 = block_max(a, red);
  float best_e = 0.0f, bm = m0;
  for (int step = 0; step < kClipSteps; ++step) {
    const float shrink = __fsub_rn(1.0f, __fdiv_rn(static_cast<float>(step), 20.0f));
    const float m = __fmul_rn(m0, shrink);
    float lo = m, hi = -m;
    for (int j = threadIdx.x; j < g; j += blockDim.x) {
      const float v = wr[j];
      const float c = v < -m ? -m : (m < v ? m : v);
      lo = fminf(lo, c);
      hi = fmaxf(hi, c);
    }
    lo = block_min(lo, red);
    hi = block_max(hi, red);
    float scale;
    int zero;
    if (!awq_params(lo, hi, kind, bits, scale_dtype, &scale, &zero) && threadIdx.x == 0) atomicOr(flag, 1);
    for (int j = threadIdx.x; j < g; j += blockDim.x) {
      const float v = wr[j];
      const float c = v < -m ? -m : (m < v ? m : v);
      d[j] = __fsub_rn(qdq(c, scale, zero, qmax), v);
    }
    __syncthreads();
    float part = 0.0f;
    for (int j = threadIdx.x; j < g; j += blockDim.x) {
      float dg = 0.0f;
      for (int k = 0; k < g; ++k) dg = fmaf(d[k], G[static_cast<int64_t>(k) * g + j], dg);
      part = fmaf(d[j], dg, part);
    }
    const float e = block_sum(part, red);
    if (step == 0 || e < best_e) {
      best_e = e;
      bm = m;
    }
    __syncthreads();  // d is rewritten by the next step
  }
  if (threadIdx.x == 0) best_m[r * ng + gi] = bm;
  for (int j = threadIdx.x; j < g; j += blockDim.x) {
    const float v = wr[j];
    wr[j] = v < -bm ? -bm : (bm < v ? bm : v);
  }
}

}  // namespace

cudaError_t abs_sum_columns(cudaStream_t s, const float* x, int64_t rows, int64_t cols, double* sum) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const int64_t col_blocks = (cols + kThreads - 1) / kThreads;
  const int64_t row_blocks = std::min<int64_t>(std::max<int64_t>(1, 1024 / col_blocks), rows);
  const int64_t per = (rows + row_blocks - 1) / row_blocks;
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>((rows + per - 1) / per));
  abs_sum_columns_kernel<<<grid, kThreads, 0, s>>>(x, rows, cols, per, sum);
  return cudaGetLastError();
}

cudaError_t scatter_rows(cudaStream_t s, int sm, const float* x, int64_t d, const int64_t* index, int64_t m,
                         float* out) {
  if (m <= 0) return cudaSuccess;
  scatter_rows_kernel<<<grid_for(m * d, sm), kThreads, 0, s>>>(x, d, index, m, out);
  return cudaGetLastError();
}

cudaError_t divide_columns(cudaStream_t s, int sm, float* x, int64_t rows, int64_t cols, const float* scale) {
  if (rows <= 0) return cudaSuccess;
  divide_columns_kernel<<<grid_for(rows * cols, sm), kThreads, 0, s>>>(x, rows, cols, scale);
  return cudaGetLastError();
}

cudaError_t awq_fake_quant(cudaStream_t s, const float* w, int rows, int cols, const float* scale, int g, int kind,
                           int bits, int scale_dtype, float* out, int* flag) {
  const int64_t warps = static_cast<int64_t>(rows) * (cols / g);
  const int64_t blocks = (warps * 32 + kThreads - 1) / kThreads;
  fake_quant_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(w, rows, cols, scale, g, kind, bits, scale_dtype,
                                                                       out, flag);
  return cudaGetLastError();
}

cudaError_t sq_diff_f64(cudaStream_t s, int sm, const float* a, const float* b, int64_t n, double* out) {
  if (n <= 0) return cudaSuccess;
  sq_diff_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(a, b, n, out);
  return cudaGetLastError();
}

cudaError_t awq_clip(cudaStream_t s, float* w, int rows, int cols, int g, const float* gram, int kind, int bits,
                     int scale_dtype, float* best_m, int* flag) {
  const int64_t blocks = static_cast<int64_t>(rows) * (cols / g);
  if (blocks == 0) return cudaSuccess;
  const std::size_t smem = static_cast<std::size_t>(g) * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(clip_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  clip_kernel<<<static_cast<unsigned>(blocks), kClipThreads, smem, s>>>(w, rows, cols, g, gram, kind, bits, scale_dtype,
                                                                        best_m, flag);
  return cudaGetLastError();
}

}  // namespace angelslim::cuda::kernels
