// Elementwise and row-wise kernels of the CUDA backend: GEMM epilogue, RMSNorm, RoPE, SwiGLU, residual add,
// bf16 rounding/conversion, fp8 fake-quant, abs-max. Arithmetic follows src/backend/cpu/cpu_ops.cpp operation by
// operation (products rounded before adds with __fmul_rn where the CPU rounds them, IEEE division and sqrt).
#include <algorithm>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda::kernels {

int grid_for(int64_t n, int sm_count) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(std::max(sm_count, 1)) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min(blocks, cap)));
}

namespace {

#define GRID_STRIDE(i, n)                                                                \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

__global__ void bias_scale_kernel(float* y, int64_t n_tokens, int64_t n_out, const float* scale, const float* bias,
                                  bool rb) {
  const float s = scale ? scale[0] : 1.0f;
  GRID_STRIDE(i, n_tokens * n_out) {
    float v = scale ? __fmul_rn(y[i], s) : y[i];
    if (bias) v = __fadd_rn(v, bias[i % n_out]);
    y[i] = maybe_round(v, rb);
  }
}

// One warp per row (n ≤ 1024): rows of a QK-norm (head_dim) or a small hidden size.
__global__ void rms_norm_warp_kernel(const float* x, int64_t rows, int64_t n, const float* w, float eps, float* y,
                                     bool rb) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const float* xr = x + row * n;
  float* yr = y + row * n;
  float ss = 0.0f;
  for (int64_t i = lane; i < n; i += 32) ss = __fadd_rn(ss, __fmul_rn(xr[i], xr[i]));
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
  for (int64_t i = lane; i < n; i += 32) {
    const float nx = maybe_round(__fmul_rn(xr[i], inv), rb);
    yr[i] = maybe_round(__fmul_rn(w[i], nx), rb);
  }
}

// One block per row (wide rows).
__global__ void rms_norm_block_kernel(const float* x, int64_t n, const float* w, float eps, float* y, bool rb) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss = __fadd_rn(ss, __fmul_rn(xr[i], xr[i]));
  ss = block_sum(ss, red);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float nx = maybe_round(__fmul_rn(xr[i], inv), rb);
    yr[i] = maybe_round(__fmul_rn(w[i], nx), rb);
  }
}

// One thread per rotated pair (t, h, j).
__global__ void rope_kernel(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
                            int64_t pos0, bool rb) {
  const int64_t half = head_dim / 2;
  GRID_STRIDE(i, n_tokens * n_heads * half) {
    const int64_t j = i % half;
    const int64_t th = i / half;  // t * n_heads + h
    const int64_t t = th / n_heads;
    const float phi = __fmul_rn(static_cast<float>(pos0 + t), inv_freq[j]);
    const float c = maybe_round(cosf(phi), rb);
    const float s = maybe_round(sinf(phi), rb);
    float* v = x + th * head_dim;
    const float a = v[j], b = v[j + half];
    v[j] = maybe_round(__fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)), rb);
    v[j + half] = maybe_round(__fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)), rb);
  }
}

__global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n, bool rb) {
  GRID_STRIDE(i, n) {
    const float g = gate[i];
    const float r = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
    out[i] = maybe_round(r, rb);
  }
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n, bool rb) {
  GRID_STRIDE(i, n) out[i] = maybe_round(__fadd_rn(a[i], b[i]), rb);
}

__global__ void round_bf16_kernel(float* x, int64_t n) { GRID_STRIDE(i, n) x[i] = round_bf16(x[i]); }

__global__ void f32_to_bf16_kernel(const float* x, uint16_t* y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = f32_to_bf16_bits(x[i]);
}

__global__ void bf16_to_f32_kernel(const uint16_t* x, float* y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = bf16_bits_to_f32(x[i]);
}

__global__ void fake_quant_fp8_kernel(const float* x, int64_t n, const float* scale, float* y) {
  const float s = scale[0];
  GRID_STRIDE(i, n) y[i] = __fmul_rn(e4m3_value(__fdiv_rn(x[i], s)), s);
}

__global__ void quant_fp8_bf16_kernel(const float* x, int64_t n, const float* scale, uint16_t* q) {
  const float s = scale[0];
  GRID_STRIDE(i, n) q[i] = f32_to_bf16_bits(e4m3_value(__fdiv_rn(x[i], s)));
}

// Non-negative floats order like their bit patterns as unsigned integers.
__global__ void abs_max_kernel(const float* x, int64_t n, float* out) {
  __shared__ unsigned int red[32];
  unsigned int m = 0;
  GRID_STRIDE(i, n) m = max(m, __float_as_uint(fabsf(x[i])));
  m = block_max_bits(m, red);
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<unsigned int*>(out), m);
}

// Thread per column, grid-stride over row chunks; atomicMax per column.
__global__ void abs_max_columns_kernel(const float* x, int64_t rows, int64_t cols, int64_t rows_per_block, float* out) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = blockIdx.y * rows_per_block;
  const int64_t r1 = min(rows, r0 + rows_per_block);
  unsigned int m = 0;
  for (int64_t r = r0; r < r1; ++r) m = max(m, __float_as_uint(fabsf(x[r * cols + c])));
  atomicMax(reinterpret_cast<unsigned int*>(out) + c, m);
}

__global__ void fp8_scale_kernel(const float* amax, float* scale) {
  scale[0] = __fdiv_rn(fmaxf(amax[0], 1e-12f), 448.0f);
}

}  // namespace

cudaError_t bias_scale(cudaStream_t s, int sm, float* y, int64_t n_tokens, int64_t n_out, const float* scale,
                       const float* bias, bool rb) {
  bias_scale_kernel<<<grid_for(n_tokens * n_out, sm), kThreads, 0, s>>>(y, n_tokens, n_out, scale, bias, rb);
  return cudaGetLastError();
}

cudaError_t rms_norm(cudaStream_t s, const float* x, int64_t rows, int64_t n, const float* w, float eps, float* y,
                     bool rb) {
  if (n <= 1024) {
    constexpr int kWarps = 8;
    const int64_t blocks = (rows + kWarps - 1) / kWarps;
    rms_norm_warp_kernel<<<static_cast<unsigned>(blocks), kWarps * 32, 0, s>>>(x, rows, n, w, eps, y, rb);
  } else {
    rms_norm_block_kernel<<<static_cast<unsigned>(rows), 512, 0, s>>>(x, n, w, eps, y, rb);
  }
  return cudaGetLastError();
}

cudaError_t rope(cudaStream_t s, int sm, float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                 const float* inv_freq, int64_t pos0, bool rb) {
  rope_kernel<<<grid_for(n_tokens * n_heads * (head_dim / 2), sm), kThreads, 0, s>>>(x, n_tokens, n_heads, head_dim,
                                                                                     inv_freq, pos0, rb);
  return cudaGetLastError();
}

cudaError_t swiglu(cudaStream_t s, int sm, const float* gate, const float* up, float* out, int64_t n, bool rb) {
  swiglu_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(gate, up, out, n, rb);
  return cudaGetLastError();
}

cudaError_t add(cudaStream_t s, int sm, const float* a, const float* b, float* out, int64_t n, bool rb) {
  add_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(a, b, out, n, rb);
  return cudaGetLastError();
}

cudaError_t round_bf16(cudaStream_t s, int sm, float* x, int64_t n) {
  round_bf16_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(x, n);
  return cudaGetLastError();
}

cudaError_t f32_to_bf16(cudaStream_t s, int sm, const float* x, uint16_t* y, int64_t n) {
  f32_to_bf16_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t bf16_to_f32(cudaStream_t s, int sm, const uint16_t* x, float* y, int64_t n) {
  bf16_to_f32_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t fake_quant_fp8(cudaStream_t s, int sm, const float* x, int64_t n, const float* scale, float* y) {
  fake_quant_fp8_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(x, n, scale, y);
  return cudaGetLastError();
}

cudaError_t quant_fp8_bf16(cudaStream_t s, int sm, const float* x, int64_t n, const float* scale, uint16_t* q) {
  quant_fp8_bf16_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(x, n, scale, q);
  return cudaGetLastError();
}

cudaError_t abs_max(cudaStream_t s, int sm, const float* x, int64_t n, float* out) {
  abs_max_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(x, n, out);
  return cudaGetLastError();
}

cudaError_t abs_max_columns(cudaStream_t s, int sm, const float* x, int64_t rows, int64_t cols, float* out) {
  const int64_t col_blocks = (cols + kThreads - 1) / kThreads;
  // Enough row chunks to give every SM a few blocks; each thread walks one column of its chunk.
  const int64_t want = std::max<int64_t>(1, (static_cast<int64_t>(std::max(sm, 1)) * 4 + col_blocks - 1) / col_blocks);
  const int64_t chunks = std::min<int64_t>(std::max<int64_t>(rows, 1), std::min<int64_t>(want, 65535));
  const int64_t rows_per_block = (rows + chunks - 1) / chunks;
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks));
  abs_max_columns_kernel<<<grid, kThreads, 0, s>>>(x, rows, cols, std::max<int64_t>(rows_per_block, 1), out);
  return cudaGetLastError();
}

cudaError_t fp8_scale_from_amax(cudaStream_t s, const float* amax, float* scale) {
  fp8_scale_kernel<<<1, 1, 0, s>>>(amax, scale);
  return cudaGetLastError();
}

}  // namespace angelslim::cuda::kernels
