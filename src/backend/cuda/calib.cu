// Kernels of the GPU calibration backend: the exact three-term bf16 split of fp32 weights (so GPTQ-dequantized
// weights, which bf16 cannot hold, still run on BF16 tensor-core GEMMs with exact products), and the bf16 row gather
// of the embedding lookup.
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda::kernels {

namespace {

__global__ void split_bf16_terms_kernel(const float* w, int64_t n, uint16_t* t0, uint16_t* t1, uint16_t* t2,
                                        unsigned int* counts) {
  unsigned int c1 = 0, c2 = 0, c3 = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const float v = w[i];
    const uint16_t a = f32_to_bf16_bits(v);
    uint16_t b = 0, c = 0;
    if (isfinite(v)) {
      // Each difference is exact in fp32: the operands are within a factor of two (Sterbenz).
      const float r1 = __fsub_rn(v, bf16_bits_to_f32(a));
      b = f32_to_bf16_bits(r1);
      const float r2 = __fsub_rn(r1, bf16_bits_to_f32(b));
      c = f32_to_bf16_bits(r2);
      c1 += r1 != 0.0f;
      c2 += r2 != 0.0f;
      c3 += __fsub_rn(r2, bf16_bits_to_f32(c)) != 0.0f;
    }
    t0[i] = a;
    t1[i] = b;
    t2[i] = c;
  }
  for (int o = 16; o > 0; o >>= 1) {
    c1 += __shfl_xor_sync(0xffffffffu, c1, o);
    c2 += __shfl_xor_sync(0xffffffffu, c2, o);
    c3 += __shfl_xor_sync(0xffffffffu, c3, o);
  }
  if ((threadIdx.x & 31) == 0) {
    if (c1) atomicAdd(counts, c1);
    if (c2) atomicAdd(counts + 1, c2);
    if (c3) atomicAdd(counts + 2, c3);
  }
}

__global__ void gather_rows_bf16_kernel(const uint16_t* table, int64_t d, const int32_t* ids, int64_t n,
                                        uint16_t* out) {
  const int64_t total = n * d;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t t = i / d, j = i % d;
    // Through fp32 and back, as the host path (a NaN comes out quiet, every other value unchanged).
    out[i] = f32_to_bf16_bits(bf16_bits_to_f32(table[static_cast<int64_t>(ids[t]) * d + j]));
  }
}

}  // namespace

cudaError_t gather_rows_bf16(cudaStream_t s, int sm, const uint16_t* table, int64_t d, const int32_t* ids, int64_t n,
                             uint16_t* out) {
  gather_rows_bf16_kernel<<<grid_for(n * d, sm), kThreads, 0, s>>>(table, d, ids, n, out);
  return cudaGetLastError();
}

cudaError_t split_bf16_terms(cudaStream_t s, int sm, const float* w, int64_t n, uint16_t* t0, uint16_t* t1,
                             uint16_t* t2, unsigned int* counts) {
  split_bf16_terms_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(w, n, t0, t1, t2, counts);
  return cudaGetLastError();
}

}  // namespace angelslim::cuda::kernels
