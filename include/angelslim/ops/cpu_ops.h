// CPU reference ops (fp32 compute; BLAS for GEMM). The CUDA backend mirrors these one by one.
// Layout conventions: activations x are row-major [n_tokens, d]; linear weights are [n_out, n_in] (PyTorch).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace angelslim::cpu {

// y[n_tokens, n_out] = x[n_tokens, n_in] * w[n_out, n_in]^T (+ bias[n_out]); beta = 1 accumulates into y.
void linear(const float* x, int64_t n_tokens, int64_t n_in, const float* w, int64_t n_out, const float* bias, float* y,
            float beta = 0.0f);

// RMSNorm over rows of width n: y = w * round?(x * rsqrt(mean(x^2) + eps)). In-place allowed (y == x).
// round_bf16: round the normalised value and the product to bf16 (HF form, SPEC 3.2).
void rms_norm(const float* x, int64_t rows, int64_t n, const float* w, float eps, float* y, bool round_bf16);

// Rotate-half RoPE in place on x [n_tokens, n_heads, head_dim]; token t has position pos0 + t.
// inv_freq: [head_dim/2]. round_bf16 rounds cos/sin and the outputs to bf16.
void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq, int64_t pos0,
          bool round_bf16);

// Rotate-half RoPE of one token in place: x [n_heads, head_dim] rotated by the angles phi [head_dim/2] (the same
// for every head); c, s: [head_dim/2] scratch. round_bf16 as in rope.
void rope_token(float* x, int64_t n_heads, int64_t head_dim, const float* phi, float* c, float* s, bool round_bf16);

// Causal grouped-query attention for one sequence.
// q: [n_q, n_heads, head_dim] (query i sits at absolute position n_past + i); k, v: [n_past + n_q, n_kv, head_dim].
// out: [n_q, n_heads, head_dim]. Scores in fp32, softmax in fp32; round_bf16 rounds probabilities and output.
void attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_past, int64_t n_heads,
               int64_t n_kv_heads, int64_t head_dim, float* out, bool round_bf16);

// out[i] = silu(gate[i]) * up[i]  (SiLU(x) = x * sigmoid(x)), n elements.
void swiglu(const float* gate, const float* up, float* out, int64_t n, bool round_bf16);

// log-sum-exp of each row of logits [rows, n]; nll[t] = lse - logits[t, target[t]].
void nll_rows(const float* logits, int64_t rows, int64_t n, const int32_t* targets, float* nll);

// In-place bf16 rounding of n values.
void round_bf16_inplace(float* x, int64_t n);

// OpenBLAS 0.3.21 (Debian 12) picks its AVX2 "Haswell" kernels on AVX-512 AMD CPUs (Zen 4), which halves
// GEMM speed (measured 62 vs 120 GFLOP/s per core on 512x16384x384). The core type is chosen when the library
// loads, before main(), so when it is unset and the CPU has AVX-512 this re-executes the program once with
// OPENBLAS_CORETYPE=SkylakeX. Returns normally when nothing needs to change (or the re-exec fails).
void ensure_fast_blas(char** argv);

// Sets the number of threads BLAS and the elementwise loops use (0 = all cores).
void set_num_threads(int n);
int num_threads();

}  // namespace angelslim::cpu
