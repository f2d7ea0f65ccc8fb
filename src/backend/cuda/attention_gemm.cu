// Kernels of the tensor-core attention path (cuda_ops.h attention_bf16_gemm): head-major bf16 copies of q/k/v, the
// CPU op's softmax over materialised score rows (src/backend/cpu/cpu_ops.cpp attention: max, Σ exp(s − max),
// p = exp(s − max)·(1/Σ) rounded to bf16, masked keys 0), and the rounded scatter of the output back to token-major.
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda::kernels {

namespace {

constexpr int kSoftmaxThreads = 256;

// out[(h·L + t)·D + d] = bf16(x[(t·n_heads + h)·D + d]).
__global__ void to_head_major_kernel(const float* x, int64_t len, int n_heads, int d, uint16_t* out) {
  const int64_t total = len * n_heads * d;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t dd = i % d, th = i / d, h = th % n_heads, t = th / n_heads;
    out[(h * len + t) * d + dd] = f32_to_bf16_bits(x[i]);
  }
}

__device__ __forceinline__ float block_max(float v, float* shared32) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  v = lane < n_warps ? shared32[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// One block per score row (head h, chunk row i; absolute query position q0 + i sees keys [0, q0 + i]).
// kRowInSmem: the row's valid scores are read from global memory once and kept in shared memory (with exp(s − m)
// after the sum pass); the arithmetic per element and the reduction order are the same either way.
template <bool kRowInSmem>
__global__ void __launch_bounds__(kSoftmaxThreads)
    softmax_rows_kernel(const float* s, int64_t rows_per_head, int64_t n_keys, int64_t q0, uint16_t* p) {
  __shared__ float red[32];
  extern __shared__ float row_s[];  // [valid] with kRowInSmem
  const int64_t row = blockIdx.x;
  const int64_t i = row % rows_per_head;
  const float* sr = s + row * n_keys;
  uint16_t* pr = p + row * n_keys;
  const int64_t valid = q0 + i + 1;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) {
    const float v = sr[j];
    if constexpr (kRowInSmem) row_s[j] = v;
    m = fmaxf(m, v);
  }
  m = block_max(m, red);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) {
    if constexpr (kRowInSmem) {
      const float e = expf(row_s[j] - m);
      row_s[j] = e;  // each thread rewrites only its own elements
      sum += e;
    } else {
      sum += expf(sr[j] - m);
    }
  }
  sum = block_sum(sum, red);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < n_keys; j += blockDim.x) {
    if constexpr (kRowInSmem)
      pr[j] = j < valid ? f32_to_bf16_bits(__fmul_rn(row_s[j], inv)) : uint16_t{0};
    else
      pr[j] = j < valid ? f32_to_bf16_bits(__fmul_rn(expf(sr[j] - m), inv)) : uint16_t{0};
  }
}

constexpr int64_t kSmemRowKeys = 12 * 1024;  // rows up to 48 KiB of fp32 scores stay in shared memory

// out[((q0 + i)·n_heads + h)·D + d] = maybe_round(o[(h·rows + i)·D + d]) for the chunk's rows.
__global__ void from_head_major_kernel(const float* o, int64_t rows, int n_heads, int d, int64_t q0, float* out,
                                       bool rb) {
  const int64_t total = rows * n_heads * d;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t dd = idx % d, th = idx / d, h = th % n_heads, i = th / n_heads;
    out[((q0 + i) * n_heads + h) * d + dd] = maybe_round(o[(h * rows + i) * d + dd], rb);
  }
}

}  // namespace

cudaError_t to_head_major_bf16(cudaStream_t s, int sm, const float* x, int64_t len, int n_heads, int d, uint16_t* out) {
  to_head_major_kernel<<<grid_for(len * n_heads * d, sm), kThreads, 0, s>>>(x, len, n_heads, d, out);
  return cudaGetLastError();
}

cudaError_t softmax_rows_bf16(cudaStream_t s, const float* scores, int64_t n_rows, int64_t rows_per_head,
                              int64_t n_keys, int64_t q0, uint16_t* p, bool row_in_smem) {
  if (row_in_smem && n_keys <= kSmemRowKeys) {
    const std::size_t smem = static_cast<std::size_t>(n_keys) * sizeof(float);
    softmax_rows_kernel<true>
        <<<static_cast<unsigned>(n_rows), kSoftmaxThreads, smem, s>>>(scores, rows_per_head, n_keys, q0, p);
  } else {
    softmax_rows_kernel<false>
        <<<static_cast<unsigned>(n_rows), kSoftmaxThreads, 0, s>>>(scores, rows_per_head, n_keys, q0, p);
  }
  return cudaGetLastError();
}

cudaError_t from_head_major(cudaStream_t s, int sm, const float* o, int64_t rows, int n_heads, int d, int64_t q0,
                            float* out, bool rb) {
  from_head_major_kernel<<<grid_for(rows * n_heads * d, sm), kThreads, 0, s>>>(o, rows, n_heads, d, q0, out, rb);
  return cudaGetLastError();
}

}  // namespace angelslim::cuda::kernels
