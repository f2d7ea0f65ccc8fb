// Kernels of the GPU GPTQ solver (backend/cuda_gptq.h; the CPU original is src/quant/gptq.cpp, after Frantar et al.,
// arXiv:2210.17323, Algorithm 1): the permuted/reversed FP64 factorisation input, the upper inverse factor U, the
// working transpose, the in-block column loop (one thread per weight row: rows are independent inside a block),
// the final scatter and an FP64 dot product. Grid and rounding arithmetic is written with explicit _rn intrinsics so
// that it matches src/quant/grid.cpp operation for operation.
#include <cuda_fp16.h>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda::kernels {

namespace {

constexpr int kRowsPerBlock = 64;  // threads (= weight rows) per block of the column-loop kernel

// a (column-major, K×K): a(r, c) = H_d(K-1-r, K-1-c) for r >= c, H_d = H[perm][:, perm] with dead diagonals 1, + λI.
__global__ void factor_input_kernel(const float* h, int k, const int32_t* perm, const uint8_t* dead, double lambda,
                                    double* a) {
  const int64_t total = static_cast<int64_t>(k) * k;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int r = static_cast<int>(idx % k), c = static_cast<int>(idx / k);
    if (r < c) continue;
    const int pc = perm[k - 1 - c], pr = perm[k - 1 - r];
    double v = h[static_cast<int64_t>(pc) * k + pr];
    if (r == c) v = (dead[pc] ? 1.0 : v) + lambda;
    a[idx] = v;
  }
}

// U(i, j) = Linv(K-1-i, K-1-j) for j >= i, Linv(r, c) = a[c*K + r] (r >= c); bad[0] = 1 when a diagonal is not
// finite and positive.
__global__ void extract_u_kernel(const double* a, int k, float* u, int* bad) {
  const int64_t total = static_cast<int64_t>(k) * k;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int r = static_cast<int>(idx % k), c = static_cast<int>(idx / k);
    if (r < c) continue;
    const float v = __double2float_rn(a[idx]);
    u[static_cast<int64_t>(k - 1 - r) * k + (k - 1 - c)] = v;
    if (r == c && !(isfinite(v) && v > 0.0f)) atomicOr(bad, 1);
  }
}

// wt[i, r] = w[r, perm[i]]: w [rows, cols] -> wt [cols, rows], through a 32×33 shared tile.
__global__ void permute_transpose_kernel(const float* w, int rows, int cols, const int32_t* perm, float* wt) {
  __shared__ float tile[32][33];
  const int i0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
  for (int dy = threadIdx.y; dy < 32; dy += blockDim.y) {
    const int r = r0 + dy, i = i0 + threadIdx.x;
    if (r < rows && i < cols) tile[dy][threadIdx.x] = w[static_cast<int64_t>(r) * cols + perm[i]];
  }
  __syncthreads();
  for (int dy = threadIdx.y; dy < 32; dy += blockDim.y) {
    const int i = i0 + dy, r = r0 + threadIdx.x;
    if (r < rows && i < cols) wt[static_cast<int64_t>(i) * rows + r] = tile[threadIdx.x][dy];
  }
}

// group_params_from_range for the GPTQ grids (kind 0: sym, 1: asym). Returns false when the rounded scale is not
// finite and positive (the CPU throws InvalidInput there).
__device__ bool group_params(float min_w, float max_w, int kind, int bits, int scale_dtype, float* scale, int* zero) {
  const int qmax = (1 << bits) - 1;
  const float fq = static_cast<float>(qmax);
  const float amax = fmaxf(fabsf(min_w), fabsf(max_w));
  float s, asym_lo = 0.0f;
  int z = 1 << (bits - 1);
  if (kind == 0) {
    s = amax == 0.0f ? __fdiv_rn(2.0f, fq) : __fdiv_rn(__fmul_rn(2.0f, amax), fq);
  } else {
    float lo = fminf(0.0f, min_w), hi = fmaxf(0.0f, max_w);
    if (lo == 0.0f && hi == 0.0f) {
      lo = -1.0f;
      hi = 1.0f;
    }
    s = __fdiv_rn(__fsub_rn(hi, lo), fq);
    asym_lo = lo;
  }
  if (isfinite(s) && s > 0.0f) {
    // grid.cpp: a positive scale that rounds to 0 becomes the dtype's smallest positive value.
    s = round_scale_dev(s, scale_dtype);
    if (s == 0.0f) s = smallest_scale_dev(scale_dtype);
  } else {
    s = round_scale_dev(s, scale_dtype);
  }
  if (!(isfinite(s) && s > 0.0f)) {
    *scale = 1.0f;
    *zero = z;
    return false;
  }
  if (kind == 1) z = static_cast<int>(fminf(fmaxf(rintf(__fdiv_rn(-asym_lo, s)), 0.0f), fq));
  *scale = s;
  *zero = z;
  return true;
}

// One block [i1, i2) of the column loop for kRowsPerBlock rows: quantize each column in order, record the scaled
// error E1[i - i1, r], update the block's later columns (rank-1 per column). W1 lives in shared memory, one column
// of it per thread. Dynamic groups read columns past the block from wt (fully updated at the block start).
__global__ void __launch_bounds__(kRowsPerBlock)
    column_block_kernel(float* wt, int rows, int k, const float* u, int i1, int i2, int g, bool static_groups,
                        const int32_t* perm, float* scales, int32_t* zeros, int n_groups, int bits, int kind,
                        int scale_dtype, float* err, uint8_t* codes_t, double* loss, int* flag) {
  extern __shared__ float w1[];  // [(i2 - i1) * kRowsPerBlock]
  const int t = threadIdx.x;
  const int r = blockIdx.x * kRowsPerBlock + t;
  double acc = 0.0;
  if (r < rows) {
    const int nb = i2 - i1;
    for (int j = 0; j < nb; ++j) w1[j * kRowsPerBlock + t] = wt[static_cast<int64_t>(i1 + j) * rows + r];
    const int qmax = (1 << bits) - 1;
    for (int i = i1; i < i2; ++i) {
      const int gi = static_groups ? perm[i] / g : i / g;
      const int64_t pi = static_cast<int64_t>(r) * n_groups + gi;
      float scale;
      int zero;
      if (!static_groups && i % g == 0) {
        float lo = w1[(i - i1) * kRowsPerBlock + t], hi = lo;
        for (int j = i + 1; j < i + g; ++j) {
          const float v = j < i2 ? w1[(j - i1) * kRowsPerBlock + t] : wt[static_cast<int64_t>(j) * rows + r];
          lo = fminf(lo, v);
          hi = fmaxf(hi, v);
        }
        if (!group_params(lo, hi, kind, bits, scale_dtype, &scale, &zero)) atomicOr(flag, 1);
        scales[pi] = scale;
        zeros[pi] = zero;
      } else {
        scale = scales[pi];
        zero = zeros[pi];
      }
      const float d = u[static_cast<int64_t>(i) * k + i];
      const float x = w1[(i - i1) * kRowsPerBlock + t];
      // quantize_code / dequantize_code of grid.h.
      const float rq = rintf(__fdiv_rn(x, scale));
      const float qlo = static_cast<float>(-zero), qhi = static_cast<float>(qmax - zero);
      const int q = static_cast<int>(rq < qlo ? qlo : (rq > qhi ? qhi : rq)) + zero;
      const float dq = __fmul_rn(static_cast<float>(q - zero), scale);
      codes_t[static_cast<int64_t>(i) * rows + r] = static_cast<uint8_t>(q);
      wt[static_cast<int64_t>(i) * rows + r] = dq;
      const float diff = __fsub_rn(x, dq);
      const float e = __fdiv_rn(diff, d);
      err[static_cast<int64_t>(i - i1) * rows + r] = e;
      acc += static_cast<double>(diff) * diff / (static_cast<double>(d) * d) / 2.0;
      const float* urow = u + static_cast<int64_t>(i) * k;
      for (int j = i + 1; j < i2; ++j)
        w1[(j - i1) * kRowsPerBlock + t] = fmaf(-urow[j], e, w1[(j - i1) * kRowsPerBlock + t]);
    }
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((t & 31) == 0 && acc != 0.0) atomicAdd(loss, acc);
}

// codes[r, fold ? i : perm[i]] = codes_t[i, r]; w_hat[r, perm[i]] = wt[i, r].
__global__ void scatter_kernel(const uint8_t* codes_t, const float* wt, int rows, int cols, const int32_t* perm,
                               bool fold, uint8_t* codes, float* w_hat) {
  const int64_t total = static_cast<int64_t>(rows) * cols;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int r = static_cast<int>(idx % rows), i = static_cast<int>(idx / rows);
    const int p = perm[i];
    codes[static_cast<int64_t>(r) * cols + (fold ? i : p)] = codes_t[idx];
    w_hat[static_cast<int64_t>(r) * cols + p] = wt[idx];
  }
}

__global__ void sub_kernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
    out[i] = __fsub_rn(a[i], b[i]);
}

__global__ void dot_f64_kernel(const float* a, const float* b, int64_t n, double* out) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
    acc += static_cast<double>(a[i]) * b[i];
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0 && acc != 0.0) atomicAdd(out, acc);
}

// h[i] = xtx[i] · scale (one FP32 rounding, as the host's `v *= scale`); bad[0] = 1 when some h[i] is not finite.
__global__ void scale_hessian_kernel(const float* xtx, int64_t n, float scale, float* h, int* bad) {
  bool ok = true;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const float v = __fmul_rn(xtx[i], scale);
    h[i] = v;
    ok = ok && isfinite(v);
  }
  if (!ok) atomicOr(bad, 1);
}

}  // namespace

cudaError_t gptq_scale_hessian(cudaStream_t s, int sm, const float* xtx, int64_t n, float scale, float* h, int* bad) {
  scale_hessian_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(xtx, n, scale, h, bad);
  return cudaGetLastError();
}

cudaError_t gptq_factor_input(cudaStream_t s, int sm, const float* h, int k, const int32_t* perm, const uint8_t* dead,
                              double lambda, double* a) {
  factor_input_kernel<<<grid_for(static_cast<int64_t>(k) * k, sm), kThreads, 0, s>>>(h, k, perm, dead, lambda, a);
  return cudaGetLastError();
}

cudaError_t gptq_extract_u(cudaStream_t s, int sm, const double* a, int k, float* u, int* bad) {
  extract_u_kernel<<<grid_for(static_cast<int64_t>(k) * k, sm), kThreads, 0, s>>>(a, k, u, bad);
  return cudaGetLastError();
}

cudaError_t gptq_permute_transpose(cudaStream_t s, const float* w, int rows, int cols, const int32_t* perm, float* wt) {
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
  permute_transpose_kernel<<<grid, dim3(32, 8), 0, s>>>(w, rows, cols, perm, wt);
  return cudaGetLastError();
}

cudaError_t gptq_column_block(cudaStream_t s, float* wt, int rows, int k, const float* u, int i1, int i2, int g,
                              bool static_groups, const int32_t* perm, float* scales, int32_t* zeros, int n_groups,
                              int bits, int kind, int scale_dtype, float* err, uint8_t* codes_t, double* loss,
                              int* flag) {
  const unsigned blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const std::size_t smem = static_cast<std::size_t>(i2 - i1) * kRowsPerBlock * sizeof(float);
  column_block_kernel<<<blocks, kRowsPerBlock, smem, s>>>(wt, rows, k, u, i1, i2, g, static_groups, perm, scales, zeros,
                                                          n_groups, bits, kind, scale_dtype, err, codes_t, loss, flag);
  return cudaGetLastError();
}

cudaError_t gptq_scatter(cudaStream_t s, int sm, const uint8_t* codes_t, const float* wt, int rows, int cols,
                         const int32_t* perm, bool fold, uint8_t* codes, float* w_hat) {
  scatter_kernel<<<grid_for(static_cast<int64_t>(rows) * cols, sm), kThreads, 0, s>>>(codes_t, wt, rows, cols, perm,
                                                                                      fold, codes, w_hat);
  return cudaGetLastError();
}

cudaError_t sub_f32(cudaStream_t s, int sm, const float* a, const float* b, float* out, int64_t n) {
  sub_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(a, b, out, n);
  return cudaGetLastError();
}

cudaError_t dot_f64(cudaStream_t s, int sm, const float* a, const float* b, int64_t n, double* out) {
  dot_f64_kernel<<<grid_for(n, sm), kThreads, 0, s>>>(a, b, n, out);
  return cudaGetLastError();
}

}  // namespace angelslim::cuda::kernels
