// Kernel launchers of the GPU FP8 weight quantization (src/backend/cuda/fp8.cu; used by cuda_fp8.cpp). Plain C++
// declarations, as kernels.h. The conversion mirrors angelslim::f32_to_fp8e4m3 (src/core/dtype.cpp) step for step
// (round to nearest even, saturation to ±448, NaN -> 0x7f) and the division is IEEE (__fdiv_rn), so the codes equal
// quantize_fp8_with_scales' bit for bit.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace angelslim::cuda::kernels {

// amax[r] = max_c |w[r, c]| for a [rows, cols] weight held as fp32 (w32) or as bf16 bits (w16; exactly one of the two
// non-null). A non-finite element makes its row's value non-finite (the maximum runs on the bit patterns).
cudaError_t fp8_row_abs_max(cudaStream_t s, const float* w32, const uint16_t* w16, int64_t rows, int64_t cols,
                            float* amax);

// q[r, c] = e4m3(w[r, c] / scale[per_row ? r : 0]) and, in FP64, err[0] += Σ (w - e4m3_value(q)·scale)² (the
// difference in FP32), err[1] += Σ w² (err zeroed by the caller). Weight layout as fp8_row_abs_max.
cudaError_t fp8_quantize_rows(cudaStream_t s, const float* w32, const uint16_t* w16, int64_t rows, int64_t cols,
                              const float* scale, bool per_row, uint8_t* q, double* err);

// q[i] = e4m3 code of x[i] (the conversion alone; tests).
cudaError_t fp8_encode(cudaStream_t s, int sm, const float* x, int64_t n, uint8_t* q);

}  // namespace angelslim::cuda::kernels
