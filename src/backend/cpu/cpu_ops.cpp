// CPU reference ops; see include/angelslim/ops/cpu_ops.h.
#include "angelslim/ops/cpu_ops.h"

#include <cblas.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "angelslim/core/dtype.h"

extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename(void);

namespace angelslim::cpu {

namespace {
int g_threads = 0;
}

void ensure_fast_blas(char** argv) {
#if defined(__x86_64__)
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
    return;
  const char* core = openblas_get_corename();
  if (core == nullptr || std::strcmp(core, "Haswell") != 0) return;
  ::setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: keep going with the slower kernels
#else
  (void)argv;
#endif
}

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_threads = n;
  openblas_set_num_threads(n);
}
int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

void round_bf16_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = round_bf16(x[i]);
}

void linear(const float* x, int64_t n_tokens, int64_t n_in, const float* w, int64_t n_out, const float* bias, float* y,
            float beta) {
  if (n_tokens == 0 || n_out == 0) return;
  if (bias) {
    if (beta == 0.0f) {
      for (int64_t t = 0; t < n_tokens; ++t) std::copy(bias, bias + n_out, y + t * n_out);
    } else {
      for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t o = 0; o < n_out; ++o) y[t * n_out + o] += bias[o];
    }
    beta = 1.0f;
  }
  if (n_in == 0) {
    if (beta == 0.0f) std::fill(y, y + n_tokens * n_out, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n_tokens), static_cast<int>(n_out),
              static_cast<int>(n_in), 1.0f, x, static_cast<int>(n_in), w, static_cast<int>(n_in), beta, y,
              static_cast<int>(n_out));
}

void rms_norm(const float* x, int64_t rows, int64_t n, const float* w, float eps, float* y, bool rb) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float ss = 0.0f;
    for (int64_t i = 0; i < n; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    if (rb) {
      for (int64_t i = 0; i < n; ++i) yr[i] = round_bf16(w[i] * round_bf16(xr[i] * inv));
    } else {
      for (int64_t i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * inv);
    }
  }
}

void rope_token(float* x, int64_t n_heads, int64_t head_dim, const float* phi, float* c, float* s, bool rb) {
  const int64_t half = head_dim / 2;
  for (int64_t j = 0; j < half; ++j) {
    c[j] = std::cos(phi[j]);
    s[j] = std::sin(phi[j]);
    if (rb) {
      c[j] = round_bf16(c[j]);
      s[j] = round_bf16(s[j]);
    }
  }
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t j = 0; j < half; ++j) {
      const float a = v[j], b = v[j + half];
      float ra = a * c[j] - b * s[j];
      float rbv = b * c[j] + a * s[j];
      if (rb) {
        ra = round_bf16(ra);
        rbv = round_bf16(rbv);
      }
      v[j] = ra;
      v[j + half] = rbv;
    }
  }
}

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq, int64_t pos0,
          bool rb) {
  const auto half = static_cast<std::size_t>(head_dim / 2);
  std::vector<float> phi(half), c(half), s(half);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float p = static_cast<float>(pos0 + t);
    for (std::size_t j = 0; j < half; ++j) phi[j] = p * inv_freq[j];
    rope_token(x + t * n_heads * head_dim, n_heads, head_dim, phi.data(), c.data(), s.data(), rb);
  }
}

void attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_past, int64_t n_heads,
               int64_t n_kv_heads, int64_t head_dim, float* out, bool rb) {
  const int64_t n_k = n_past + n_q;
  const int64_t group = n_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  constexpr int64_t kBlock = 128;  // query rows per score block: bounds memory to kBlock x n_k floats
  std::vector<float> scores(static_cast<std::size_t>(std::min(kBlock, n_q) * n_k));
  const int64_t q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
  for (int64_t h = 0; h < n_heads; ++h) {
    const int64_t kvh = h / group;
    for (int64_t q0 = 0; q0 < n_q; q0 += kBlock) {
      const int64_t nb = std::min(kBlock, n_q - q0);
      const int64_t n_keys = n_past + q0 + nb;  // causal: the last row of the block sees this many keys
      // scores[nb, n_keys] = Q_blk * K^T * scale
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nb), static_cast<int>(n_keys),
                  static_cast<int>(head_dim), scale, q + q0 * q_stride + h * head_dim, static_cast<int>(q_stride),
                  k + kvh * head_dim, static_cast<int>(kv_stride), 0.0f, scores.data(), static_cast<int>(n_keys));
      for (int64_t i = 0; i < nb; ++i) {
        float* row = scores.data() + i * n_keys;
        const int64_t valid = n_past + q0 + i + 1;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, row[j]);
        float sum = 0.0f;
        for (int64_t j = 0; j < valid; ++j) {
          row[j] = std::exp(row[j] - mx);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < valid; ++j) row[j] = rb ? round_bf16(row[j] * inv) : row[j] * inv;
        for (int64_t j = valid; j < n_keys; ++j) row[j] = 0.0f;
      }
      // out_blk[nb, D] = P * V
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nb), static_cast<int>(head_dim),
                  static_cast<int>(n_keys), 1.0f, scores.data(), static_cast<int>(n_keys), v + kvh * head_dim,
                  static_cast<int>(kv_stride), 0.0f, out + q0 * q_stride + h * head_dim, static_cast<int>(q_stride));
    }
  }
  if (rb) round_bf16_inplace(out, n_q * q_stride);
}

void swiglu(const float* gate, const float* up, float* out, int64_t n, bool rb) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float r = g / (1.0f + std::exp(-g)) * up[i];
    out[i] = rb ? round_bf16(r) : r;
  }
}

void nll_rows(const float* logits, int64_t rows, int64_t n, const int32_t* targets, float* nll) {
  for (int64_t t = 0; t < rows; ++t) {
    const float* row = logits + t * n;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, row[j]);
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(row[j] - mx));
    const double lse = static_cast<double>(mx) + std::log(sum);
    nll[t] = static_cast<float>(lse - static_cast<double>(row[targets[t]]));
  }
}

}  // namespace angelslim::cpu
