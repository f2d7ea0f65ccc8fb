// Kernel launchers of the CUDA backend (defined in the .cu files of this directory). Plain C++ declarations so
// the checked host wrappers (cuda_ops.cpp, compiled by the host compiler) can call them; each launcher enqueues
// its kernel(s) on `stream` and returns cudaGetLastError() of the launch. Shapes and pointers: see cuda_ops.h.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace angelslim::cuda::kernels {

// Grid size for a grid-stride loop over n elements (at most 32 blocks of 256 per SM).
int grid_for(int64_t n, int sm_count);

cudaError_t bias_scale(cudaStream_t s, int sm, float* y, int64_t n_tokens, int64_t n_out, const float* scale,
                       const float* bias, bool round_bf16);
cudaError_t rms_norm(cudaStream_t s, const float* x, int64_t rows, int64_t n, const float* w, float eps, float* y,
                     bool round_bf16);
cudaError_t rope(cudaStream_t s, int sm, float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                 const float* inv_freq, int64_t pos0, bool round_bf16);
cudaError_t swiglu(cudaStream_t s, int sm, const float* gate, const float* up, float* out, int64_t n, bool round_bf16);
cudaError_t add(cudaStream_t s, int sm, const float* a, const float* b, float* out, int64_t n, bool round_bf16);
cudaError_t round_bf16(cudaStream_t s, int sm, float* x, int64_t n);
cudaError_t f32_to_bf16(cudaStream_t s, int sm, const float* x, uint16_t* y, int64_t n);
cudaError_t bf16_to_f32(cudaStream_t s, int sm, const uint16_t* x, float* y, int64_t n);
cudaError_t fake_quant_fp8(cudaStream_t s, int sm, const float* x, int64_t n, const float* scale, float* y);
cudaError_t quant_fp8_bf16(cudaStream_t s, int sm, const float* x, int64_t n, const float* scale, uint16_t* q);
// out must be zeroed before (abs values are combined with an integer atomicMax on their bits).
cudaError_t abs_max(cudaStream_t s, int sm, const float* x, int64_t n, float* out);
cudaError_t abs_max_columns(cudaStream_t s, int sm, const float* x, int64_t rows, int64_t cols, float* out);
cudaError_t fp8_scale_from_amax(cudaStream_t s, const float* amax, float* scale);

// Attention (attention.cu). head_dim 64 or 128 (the caller checks).
cudaError_t attention(cudaStream_t s, const float* q, const float* k, const float* v, int64_t n_q, int64_t n_past,
                      int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float* out, bool round_bf16);

// Fused ragged attention on bf16 tensor cores (attention_varlen.cu): q/k/v bf16 token-major, tiles [n_tiles] of
// {first token, length, first query row, unused}; head_dim 64 or 128 (the caller checks).
cudaError_t attention_varlen_bf16(cudaStream_t s, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                  const int4* tiles, int64_t n_tiles, int64_t n_heads, int64_t n_kv_heads,
                                  int64_t head_dim, float* out, bool round_bf16);

// Tensor-core attention helpers (attention_gemm.cu).
cudaError_t to_head_major_bf16(cudaStream_t s, int sm, const float* x, int64_t len, int n_heads, int d, uint16_t* out);
// row_in_smem: keep rows of up to 12288 keys in shared memory (one read of the scores; same results).
cudaError_t softmax_rows_bf16(cudaStream_t s, const float* scores, int64_t n_rows, int64_t rows_per_head,
                              int64_t n_keys, int64_t q0, uint16_t* p, bool row_in_smem = true);
cudaError_t from_head_major(cudaStream_t s, int sm, const float* o, int64_t rows, int n_heads, int d, int64_t q0,
                            float* out, bool rb);

// MoE and reductions (moe.cu).
cudaError_t moe_route(cudaStream_t s, float* logits, int64_t n_tokens, int64_t n_experts, int64_t top_k,
                      int32_t* experts, float* weights, bool round_bf16);
// counts: scratch [n_experts] int64.
cudaError_t moe_expert_lists(cudaStream_t s, const int32_t* experts, const float* weights, int64_t n_tokens,
                             int64_t top_k, int64_t n_experts, int64_t* offsets, int64_t* token_index,
                             float* slot_weight);
cudaError_t gather_rows(cudaStream_t s, int sm, const float* x, int64_t d, const int64_t* index, int64_t m, float* out);
cudaError_t scatter_add_rows(cudaStream_t s, int sm, const float* y, int64_t d, const int64_t* index,
                             const float* weight, int64_t m, float* out, bool round_bf16);
// Calibration helpers (calib.cu).
cudaError_t gather_rows_bf16(cudaStream_t s, int sm, const uint16_t* table, int64_t d, const int32_t* ids, int64_t n,
                             uint16_t* out);
cudaError_t split_bf16_terms(cudaStream_t s, int sm, const float* w, int64_t n, uint16_t* t0, uint16_t* t1,
                             uint16_t* t2, unsigned int* counts);

// GPU GPTQ solver (gptq.cu); shapes and meaning in src/backend/cuda/cuda_gptq.cpp. kind: 0 GPTQ-sym, 1 GPTQ-asym;
// scale_dtype: 0 bf16, 1 f16, 2 f32.
// h = xtx · scale elementwise (n values); bad[0] = 1 when a result is not finite (bad zeroed by the caller).
cudaError_t gptq_scale_hessian(cudaStream_t s, int sm, const float* xtx, int64_t n, float scale, float* h, int* bad);
cudaError_t gptq_factor_input(cudaStream_t s, int sm, const float* h, int k, const int32_t* perm, const uint8_t* dead,
                              double lambda, double* a);
cudaError_t gptq_extract_u(cudaStream_t s, int sm, const double* a, int k, float* u, int* bad);
cudaError_t gptq_permute_transpose(cudaStream_t s, const float* w, int rows, int cols, const int32_t* perm, float* wt);
cudaError_t gptq_column_block(cudaStream_t s, float* wt, int rows, int k, const float* u, int i1, int i2, int g,
                              bool static_groups, const int32_t* perm, float* scales, int32_t* zeros, int n_groups,
                              int bits, int kind, int scale_dtype, float* err, uint8_t* codes_t, double* loss,
                              int* flag);
cudaError_t gptq_scatter(cudaStream_t s, int sm, const uint8_t* codes_t, const float* wt, int rows, int cols,
                         const int32_t* perm, bool fold, uint8_t* codes, float* w_hat);
cudaError_t sub_f32(cudaStream_t s, int sm, const float* a, const float* b, float* out, int64_t n);
// out[0] += Σ a[i]·b[i] in FP64 (out zeroed by the caller).
cudaError_t dot_f64(cudaStream_t s, int sm, const float* a, const float* b, int64_t n, double* out);

// Copies the lower triangle of the column-major n×n matrix h onto its upper triangle.
cudaError_t mirror_lower(cudaStream_t s, int sm, float* h, int64_t n);

}  // namespace angelslim::cuda::kernels
