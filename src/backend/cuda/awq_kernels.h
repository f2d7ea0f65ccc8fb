// Kernel launchers of the GPU AWQ search (src/backend/cuda/awq.cu; used by cuda_awq.cpp). Plain C++ declarations,
// as kernels.h. Grid arithmetic follows src/quant/grid.cpp and src/quant/awq.cpp operation for operation (explicit
// _rn intrinsics, no contraction), so the fake-quantized weights equal the CPU's bit for bit.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace angelslim::cuda::kernels {

// sum[c] += Σ_t |x[t, c]| in FP64, x [rows, cols] fp32.
cudaError_t abs_sum_columns(cudaStream_t s, const float* x, int64_t rows, int64_t cols, double* sum);

// out[index[i], :] = x[i, :] for i < m (x: [m, d]; index: int64, distinct).
cudaError_t scatter_rows(cudaStream_t s, int sm, const float* x, int64_t d, const int64_t* index, int64_t m,
                         float* out);

// x[t, c] /= s[c] (FP32 division) in place, x [rows, cols].
cudaError_t divide_columns(cudaStream_t s, int sm, float* x, int64_t rows, int64_t cols, const float* scale);

// awq_fake_quantize (quant/awq.h): out = dequant(quant(w·diag(s)))·diag(1/s) on an AWQ grid (kind 0: AWQ-asym,
// 1: AWQ-sym), groups of g consecutive columns. scale_dtype: 0 bf16, 1 f16, 2 f32. flag[0] |= 1 where a rounded
// scale is not finite and positive (the CPU throws there).
cudaError_t awq_fake_quant(cudaStream_t s, const float* w, int rows, int cols, const float* scale, int g, int kind,
                           int bits, int scale_dtype, float* out, int* flag);

// out[0] += Σ (double)(a[i] - b[i])² (the difference in FP32, as the CPU's sq_diff).
cudaError_t sq_diff_f64(cudaStream_t s, int sm, const float* a, const float* b, int64_t n, double* out);

// The AWQ clip search (quant/awq_clip.h) for every (row, group): gram [n_groups, g, g] holds each group's
// Xᵀ X / n; w [rows, cols] is clamped in place to ±m*, best_m [rows, n_groups] receives m*.
cudaError_t awq_clip(cudaStream_t s, float* w, int rows, int cols, int g, const float* gram, int kind, int bits,
                     int scale_dtype, float* best_m, int* flag);

}  // namespace angelslim::cuda::kernels
