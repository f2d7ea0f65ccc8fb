// Checked host wrappers of the CUDA backend ops (see include/angelslim/backend/cuda_ops.h): argument checks,
// cuBLAS calls, and a last-error check after every kernel launch.
#include "angelslim/backend/cuda_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "angelslim/core/parallel.h"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda {

namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr std::size_t kWorkspaceBytes = 32u << 20;  // cuBLAS on Hopper asks for 32 MiB (cuBLAS docs)

int to_int(int64_t v, const char* what) {
  ANGELSLIM_CHECK(v >= 0 && v <= kInt32Max, InvalidInput, "cuda: {} = {} does not fit the int32 range of cuBLAS", what,
                  v);
  return static_cast<int>(v);
}

void check_nonneg(int64_t v, const char* op, const char* what) {
  ANGELSLIM_CHECK(v >= 0, InvalidInput, "cuda::{}: {} = {} (expected >= 0)", op, what, v);
}

}  // namespace

void throw_cuda_error(const char* what, const char* message, const char* file, int line) {
  throw Internal(fmt::format("{} failed: {} ({}:{})", what, message ? message : "unknown error", file, line));
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error so later checked calls do not see it
    return 0;
  }
  return n;
}

bool cuda_legacy() {
  static const bool b = [] {
    const char* e = std::getenv("ANGELSLIM_CUDA_LEGACY");
    return e && std::string(e) == "1";
  }();
  return b;
}

CudaContext::CudaContext(int device) : device_(device) {
  const int n = device_count();
  ANGELSLIM_CHECK(device >= 0 && device < n, Unsupported, "cuda: device {} requested, {} CUDA device(s) available",
                  device, n);
  ANGELSLIM_CUDA_CHECK(cudaSetDevice(device));
  ANGELSLIM_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device));
  ANGELSLIM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  ANGELSLIM_CUBLAS_CHECK(::angelslim::cuda::cublas().create(&cublas_));
  ANGELSLIM_CUBLAS_CHECK(::angelslim::cuda::cublas().set_stream(cublas_, stream_));
  // Default math: fp32 GEMMs stay fp32 (no TF32); GemmEx with BF16 inputs still uses the tensor cores.
  ANGELSLIM_CUBLAS_CHECK(::angelslim::cuda::cublas().set_math_mode(cublas_, CUBLAS_DEFAULT_MATH));
  workspace_.reset(kWorkspaceBytes);
  ANGELSLIM_CUBLAS_CHECK(::angelslim::cuda::cublas().set_workspace(cublas_, workspace_.data(), kWorkspaceBytes));
}

CudaContext::~CudaContext() {
  if (stream_) (void)cudaStreamSynchronize(stream_);
  for (cudaEvent_t e : staged_)
    if (e) (void)cudaEventDestroy(e);
  if (cublas_) (void)::angelslim::cuda::cublas().destroy(cublas_);
  workspace_ = DeviceBuffer<unsigned char>();
  if (stream_) (void)cudaStreamDestroy(stream_);
}

void CudaContext::synchronize() const { ANGELSLIM_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

namespace {

constexpr std::size_t kStagingChunk = std::size_t{32} << 20;  // bytes per staging buffer
constexpr std::size_t kStagedMin = std::size_t{4} << 20;      // smaller copies go direct

// A copy of fewer than kStagedMin bytes: straight through the driver, then the stream is synchronised.
void direct_copy(const CudaContext& ctx, void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, ctx.stream()));
  ctx.synchronize();
}

}  // namespace

// Up to four threads: fresh destination pages also fault in parallel.
void host_copy(void* dst, const void* src, std::size_t bytes) {
  constexpr std::size_t kPiece = std::size_t{4} << 20;
  const int64_t pieces = static_cast<int64_t>((bytes + kPiece - 1) / kPiece);
  parallel_for(
      pieces,
      [&](int64_t i) {
        const std::size_t off = static_cast<std::size_t>(i) * kPiece;
        std::memcpy(static_cast<char*>(dst) + off, static_cast<const char*>(src) + off, std::min(kPiece, bytes - off));
      },
      4);
}

void CudaContext::ensure_staging() {
  if (staged_[0]) return;
  for (int i = 0; i < 2; ++i) {
    staging_[i].reset(kStagingChunk);
    ANGELSLIM_CUDA_CHECK(cudaEventCreateWithFlags(&staged_[i], cudaEventDisableTiming));
  }
}

void CudaContext::copy_to_host(void* host, const void* dev, std::size_t bytes) {
  if (bytes == 0) return;
  if (bytes < kStagedMin) return direct_copy(*this, host, dev, bytes, cudaMemcpyDeviceToHost);
  ensure_staging();
  const std::size_t chunks = (bytes + kStagingChunk - 1) / kStagingChunk;
  auto enqueue = [&](std::size_t c) {
    const std::size_t off = c * kStagingChunk, n = std::min(kStagingChunk, bytes - off);
    ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(staging_[c % 2].data(), static_cast<const char*>(dev) + off, n,
                                         cudaMemcpyDeviceToHost, stream_));
    ANGELSLIM_CUDA_CHECK(cudaEventRecord(staged_[c % 2], stream_));
  };
  enqueue(0);
  for (std::size_t c = 0; c < chunks; ++c) {
    // The other buffer's previous chunk was copied out in the last iteration: refill it while this one is read.
    if (c + 1 < chunks) enqueue(c + 1);
    ANGELSLIM_CUDA_CHECK(cudaEventSynchronize(staged_[c % 2]));
    const std::size_t off = c * kStagingChunk;
    host_copy(static_cast<char*>(host) + off, staging_[c % 2].data(), std::min(kStagingChunk, bytes - off));
  }
  synchronize();
}

void CudaContext::copy_to_device(void* dev, const void* host, std::size_t bytes) {
  if (bytes == 0) return;
  if (bytes < kStagedMin) return direct_copy(*this, dev, host, bytes, cudaMemcpyHostToDevice);
  ensure_staging();
  const std::size_t chunks = (bytes + kStagingChunk - 1) / kStagingChunk;
  for (std::size_t c = 0; c < chunks; ++c) {
    // Buffer c % 2 is free once the transfer of chunk c - 2 (its last use) has completed.
    if (c >= 2) ANGELSLIM_CUDA_CHECK(cudaEventSynchronize(staged_[c % 2]));
    const std::size_t off = c * kStagingChunk, n = std::min(kStagingChunk, bytes - off);
    host_copy(staging_[c % 2].data(), static_cast<const char*>(host) + off, n);
    ANGELSLIM_CUDA_CHECK(
        cudaMemcpyAsync(static_cast<char*>(dev) + off, staging_[c % 2].data(), n, cudaMemcpyHostToDevice, stream_));
    ANGELSLIM_CUDA_CHECK(cudaEventRecord(staged_[c % 2], stream_));
  }
  synchronize();
}

void linear(CudaContext& ctx, const float* x, int64_t n_tokens, int64_t n_in, const float* w, int64_t n_out,
            const float* bias, float* y, float beta) {
  const int t = to_int(n_tokens, "n_tokens"), k = to_int(n_in, "n_in"), o = to_int(n_out, "n_out");
  if (t == 0 || o == 0) return;
  if (k == 0) {
    if (beta == 0.0f) ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(y, 0, sizeof(float) * t * o, ctx.stream()));
  } else {
    const float alpha = 1.0f;
    // Row-major y[t, o] = x[t, k]·w[o, k]ᵀ is column-major yᵀ[o, t] = (w as k×o)ᵀ · (x as k×t).
    ANGELSLIM_CUBLAS_CHECK(
        cublas().sgemm(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, o, t, k, &alpha, w, k, x, k, &beta, y, o));
  }
  if (bias) {
    ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::bias_scale(ctx.stream(), ctx.sm_count(), y, t, o, nullptr, bias, false),
                                "bias_scale_kernel");
  }
}

void linear_bf16(CudaContext& ctx, const uint16_t* x, int64_t n_tokens, int64_t n_in, const uint16_t* w, int64_t n_out,
                 const float* bias, float* y, float alpha, float beta) {
  const int t = to_int(n_tokens, "n_tokens"), k = to_int(n_in, "n_in"), o = to_int(n_out, "n_out");
  if (t == 0 || o == 0) return;
  if (k == 0) {
    if (beta == 0.0f) ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(y, 0, sizeof(float) * t * o, ctx.stream()));
  } else {
    ANGELSLIM_CUBLAS_CHECK(cublas().gemm_ex(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, o, t, k, &alpha, w, CUDA_R_16BF, k,
                                            x, CUDA_R_16BF, k, &beta, y, CUDA_R_32F, o, CUBLAS_COMPUTE_32F,
                                            CUBLAS_GEMM_DEFAULT));
  }
  if (bias) {
    ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::bias_scale(ctx.stream(), ctx.sm_count(), y, t, o, nullptr, bias, false),
                                "bias_scale_kernel");
  }
}

void bias_scale(CudaContext& ctx, float* y, int64_t n_tokens, int64_t n_out, const float* scale, const float* bias,
                bool round_bf16) {
  check_nonneg(n_tokens, "bias_scale", "n_tokens");
  check_nonneg(n_out, "bias_scale", "n_out");
  if (n_tokens * n_out == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(
      kernels::bias_scale(ctx.stream(), ctx.sm_count(), y, n_tokens, n_out, scale, bias, round_bf16),
      "bias_scale_kernel");
}

void rms_norm(CudaContext& ctx, const float* x, int64_t rows, int64_t n, const float* w, float eps, float* y,
              bool round_bf16) {
  check_nonneg(rows, "rms_norm", "rows");
  ANGELSLIM_CHECK(n > 0, InvalidInput, "cuda::rms_norm: row width n = {} (expected > 0)", n);
  ANGELSLIM_CHECK(rows <= kInt32Max, InvalidInput, "cuda::rms_norm: {} rows exceed the grid limit", rows);
  if (rows == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::rms_norm(ctx.stream(), x, rows, n, w, eps, y, round_bf16), "rms_norm_kernel");
}

void rope(CudaContext& ctx, float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
          int64_t pos0, bool round_bf16) {
  check_nonneg(n_tokens, "rope", "n_tokens");
  check_nonneg(n_heads, "rope", "n_heads");
  check_nonneg(pos0, "rope", "pos0");
  ANGELSLIM_CHECK(head_dim > 0 && head_dim % 2 == 0, InvalidInput, "cuda::rope: head_dim = {} (expected even, > 0)",
                  head_dim);
  if (n_tokens * n_heads == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(
      kernels::rope(ctx.stream(), ctx.sm_count(), x, n_tokens, n_heads, head_dim, inv_freq, pos0, round_bf16),
      "rope_kernel");
}

void attention(CudaContext& ctx, const float* q, const float* k, const float* v, int64_t n_q, int64_t n_past,
               int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float* out, bool round_bf16) {
  ANGELSLIM_CHECK(head_dim == 64 || head_dim == 128, Unsupported,
                  "cuda::attention: head_dim = {} (the kernel is built for 64 and 128)", head_dim);
  ANGELSLIM_CHECK(n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0, InvalidInput,
                  "cuda::attention: n_heads = {} must be a positive multiple of n_kv_heads = {}", n_heads, n_kv_heads);
  ANGELSLIM_CHECK(n_heads <= 65535, InvalidInput, "cuda::attention: n_heads = {} exceeds the grid limit", n_heads);
  check_nonneg(n_q, "attention", "n_q");
  check_nonneg(n_past, "attention", "n_past");
  ANGELSLIM_CHECK(n_past + n_q <= kInt32Max, InvalidInput, "cuda::attention: {} keys exceed the int32 range",
                  n_past + n_q);
  if (n_q == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(
      kernels::attention(ctx.stream(), q, k, v, n_q, n_past, n_heads, n_kv_heads, head_dim, out, round_bf16),
      "attention_kernel");
}

void swiglu(CudaContext& ctx, const float* gate, const float* up, float* out, int64_t n, bool round_bf16) {
  check_nonneg(n, "swiglu", "n");
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::swiglu(ctx.stream(), ctx.sm_count(), gate, up, out, n, round_bf16),
                              "swiglu_kernel");
}

void add(CudaContext& ctx, const float* a, const float* b, float* out, int64_t n, bool round_bf16) {
  check_nonneg(n, "add", "n");
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::add(ctx.stream(), ctx.sm_count(), a, b, out, n, round_bf16), "add_kernel");
}

void round_bf16_inplace(CudaContext& ctx, float* x, int64_t n) {
  check_nonneg(n, "round_bf16_inplace", "n");
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::round_bf16(ctx.stream(), ctx.sm_count(), x, n), "round_bf16_kernel");
}

void f32_to_bf16(CudaContext& ctx, const float* x, uint16_t* y, int64_t n) {
  check_nonneg(n, "f32_to_bf16", "n");
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::f32_to_bf16(ctx.stream(), ctx.sm_count(), x, y, n), "f32_to_bf16_kernel");
}

void bf16_to_f32(CudaContext& ctx, const uint16_t* x, float* y, int64_t n) {
  check_nonneg(n, "bf16_to_f32", "n");
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::bf16_to_f32(ctx.stream(), ctx.sm_count(), x, y, n), "bf16_to_f32_kernel");
}

void fake_quant_fp8(CudaContext& ctx, const float* x, int64_t n, const float* scale, float* y) {
  check_nonneg(n, "fake_quant_fp8", "n");
  ANGELSLIM_CHECK(scale != nullptr, InvalidInput, "cuda::fake_quant_fp8: scale is null");
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::fake_quant_fp8(ctx.stream(), ctx.sm_count(), x, n, scale, y),
                              "fake_quant_fp8_kernel");
}

void quant_fp8_bf16(CudaContext& ctx, const float* x, int64_t n, const float* scale, uint16_t* q) {
  check_nonneg(n, "quant_fp8_bf16", "n");
  ANGELSLIM_CHECK(scale != nullptr, InvalidInput, "cuda::quant_fp8_bf16: scale is null");
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::quant_fp8_bf16(ctx.stream(), ctx.sm_count(), x, n, scale, q),
                              "quant_fp8_bf16_kernel");
}

void abs_max(CudaContext& ctx, const float* x, int64_t n, float* out) {
  check_nonneg(n, "abs_max", "n");
  ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float), ctx.stream()));
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::abs_max(ctx.stream(), ctx.sm_count(), x, n, out), "abs_max_kernel");
}

void abs_max_columns(CudaContext& ctx, const float* x, int64_t rows, int64_t cols, float* out) {
  check_nonneg(rows, "abs_max_columns", "rows");
  check_nonneg(cols, "abs_max_columns", "cols");
  if (cols == 0) return;
  ANGELSLIM_CHECK((cols + 255) / 256 <= kInt32Max, InvalidInput, "cuda::abs_max_columns: {} columns", cols);
  ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float) * static_cast<std::size_t>(cols), ctx.stream()));
  if (rows == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::abs_max_columns(ctx.stream(), ctx.sm_count(), x, rows, cols, out),
                              "abs_max_columns_kernel");
}

void fp8_scale_from_amax(CudaContext& ctx, const float* amax, float* scale) {
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::fp8_scale_from_amax(ctx.stream(), amax, scale), "fp8_scale_kernel");
}

void moe_route(CudaContext& ctx, float* logits, int64_t n_tokens, int64_t n_experts, int64_t top_k, int32_t* experts,
               float* weights, bool round_bf16) {
  ANGELSLIM_CHECK(n_experts >= 1 && n_experts <= 256, Unsupported,
                  "cuda::moe_route: n_experts = {} (the kernel handles 1..256)", n_experts);
  ANGELSLIM_CHECK(top_k >= 1 && top_k <= n_experts, InvalidInput,
                  "cuda::moe_route: top_k = {} (expected 1..n_experts = {})", top_k, n_experts);
  check_nonneg(n_tokens, "moe_route", "n_tokens");
  ANGELSLIM_CHECK(n_tokens / 128 < kInt32Max, InvalidInput, "cuda::moe_route: {} tokens", n_tokens);
  if (n_tokens == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(
      kernels::moe_route(ctx.stream(), logits, n_tokens, n_experts, top_k, experts, weights, round_bf16),
      "moe_route_kernel");
}

void moe_expert_lists(CudaContext& ctx, const int32_t* experts, const float* weights, int64_t n_tokens, int64_t top_k,
                      int64_t n_experts, int64_t* offsets, int64_t* token_index, float* slot_weight) {
  ANGELSLIM_CHECK(n_experts >= 1 && n_experts <= 65535, InvalidInput, "cuda::moe_expert_lists: n_experts = {}",
                  n_experts);
  ANGELSLIM_CHECK(top_k >= 1, InvalidInput, "cuda::moe_expert_lists: top_k = {} (expected >= 1)", top_k);
  check_nonneg(n_tokens, "moe_expert_lists", "n_tokens");
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::moe_expert_lists(ctx.stream(), experts, weights, n_tokens, top_k, n_experts,
                                                        offsets, token_index, slot_weight),
                              "moe_count/scan/fill_kernel");
}

void gather_rows(CudaContext& ctx, const float* x, int64_t d, const int64_t* index, int64_t m, float* out) {
  check_nonneg(d, "gather_rows", "d");
  check_nonneg(m, "gather_rows", "m");
  if (m * d == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::gather_rows(ctx.stream(), ctx.sm_count(), x, d, index, m, out),
                              "gather_rows_kernel");
}

void scatter_add_rows(CudaContext& ctx, const float* y, int64_t d, const int64_t* index, const float* weight, int64_t m,
                      float* out, bool round_bf16) {
  check_nonneg(d, "scatter_add_rows", "d");
  check_nonneg(m, "scatter_add_rows", "m");
  if (m * d == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(
      kernels::scatter_add_rows(ctx.stream(), ctx.sm_count(), y, d, index, weight, m, out, round_bf16),
      "scatter_add_rows_kernel");
}

void hessian_accumulate(CudaContext& ctx, const float* x, int64_t n_tokens, int64_t n_in, float alpha, float* h) {
  const int t = to_int(n_tokens, "n_tokens"), k = to_int(n_in, "n_in");
  if (t == 0 || k == 0) return;
  const float beta = 1.0f;
  // x row-major [t, k] is column-major k×t (lda k): C[k×k] += alpha·A·Aᵀ = xᵀx, lower triangle.
  ANGELSLIM_CUBLAS_CHECK(
      cublas().ssyrk(ctx.cublas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, k, t, &alpha, x, k, &beta, h, k));
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::mirror_lower(ctx.stream(), ctx.sm_count(), h, k), "mirror_lower_kernel");
}

void attention_bf16_gemm(CudaContext& ctx, const float* q, const float* k, const float* v, int64_t n, int64_t n_heads,
                         int64_t n_kv_heads, int64_t head_dim, float* out, AttentionWorkspace& ws) {
  ANGELSLIM_CHECK(n >= 0 && n_heads >= 1 && n_kv_heads >= 1 && n_heads % n_kv_heads == 0, InvalidInput,
                  "cuda::attention_bf16_gemm: n_heads {} must be a positive multiple of n_kv_heads {}", n_heads,
                  n_kv_heads);
  ANGELSLIM_CHECK(head_dim >= 8 && head_dim % 8 == 0, Unsupported,
                  "cuda::attention_bf16_gemm: head_dim = {} (expected a multiple of 8)", head_dim);
  if (n == 0) return;
  const int64_t group = n_heads / n_kv_heads, d = head_dim;
  cudaStream_t s = ctx.stream();
  const int sm = ctx.sm_count();
  auto grow16 = [](DeviceBuffer<uint16_t>& b, int64_t m) { b.ensure(static_cast<std::size_t>(m)); };
  grow16(ws.q16, n * n_heads * d);
  grow16(ws.k16, n * n_kv_heads * d);
  grow16(ws.v16, n * n_kv_heads * d);
  ANGELSLIM_CUDA_CHECK_LAUNCH(
      kernels::to_head_major_bf16(s, sm, q, n, static_cast<int>(n_heads), static_cast<int>(d), ws.q16.data()),
      "to_head_major_kernel");
  ANGELSLIM_CUDA_CHECK_LAUNCH(
      kernels::to_head_major_bf16(s, sm, k, n, static_cast<int>(n_kv_heads), static_cast<int>(d), ws.k16.data()),
      "to_head_major_kernel");
  ANGELSLIM_CUDA_CHECK_LAUNCH(
      kernels::to_head_major_bf16(s, sm, v, n, static_cast<int>(n_kv_heads), static_cast<int>(d), ws.v16.data()),
      "to_head_major_kernel");
  // Query chunk: the [n_heads, chunk, keys] fp32 scores stay under 256 MiB (64-row multiples), and a sequence of
  // 1024 tokens or more runs in about four chunks, so that the causal mask's upper triangle is mostly not computed
  // (chunk q0 scores keys [0, q0 + chunk) only: 5/8 of the full square with four).
  constexpr int64_t kScoreBytes = int64_t{256} << 20;
  int64_t chunk = std::max<int64_t>(64, kScoreBytes / (n_heads * n * 4) / 64 * 64);
  if (!cuda_legacy()) chunk = std::min(chunk, std::max<int64_t>(256, (n / 4 + 63) / 64 * 64));
  chunk = std::min(chunk, n);
  ws.s.ensure(static_cast<std::size_t>(n_heads * chunk * n));
  grow16(ws.p16, n_heads * chunk * n);
  ws.o.ensure(static_cast<std::size_t>(n_heads * chunk * d));
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float one = 1.0f, zero = 0.0f;
  for (int64_t q0 = 0; q0 < n; q0 += chunk) {
    const int64_t qc = std::min(chunk, n - q0), nk = q0 + qc;  // causal: the chunk's last row sees nk keys
    const int m_nk = to_int(nk, "keys"), m_qc = to_int(qc, "queries"), m_d = to_int(d, "head_dim");
    const auto nkv = to_int(n_kv_heads, "n_kv_heads");
    for (int64_t g = 0; g < group; ++g) {
      // Column-major S_h (nk × qc, ld nk) = K_j (D × nk)ᵀ · Q_h (D × qc), h = j·group + g, batched over kv heads j.
      ANGELSLIM_CUBLAS_CHECK(cublas().gemm_strided_batched_ex(
          ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, m_nk, m_qc, m_d, &scale, ws.k16.data(), CUDA_R_16BF, m_d, n * d,
          ws.q16.data() + (g * n + q0) * d, CUDA_R_16BF, m_d, group * n * d, &zero, ws.s.data() + g * qc * nk,
          CUDA_R_32F, m_nk, group * qc * nk, nkv, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::softmax_rows_bf16(s, ws.s.data(), n_heads * qc, qc, nk, q0, ws.p16.data(), !cuda_legacy()),
                                "softmax_rows_kernel");
    for (int64_t g = 0; g < group; ++g) {
      // Column-major O_h (D × qc) = V_j (D × nk) · P_h (nk × qc).
      ANGELSLIM_CUBLAS_CHECK(cublas().gemm_strided_batched_ex(
          ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, m_d, m_qc, m_nk, &one, ws.v16.data(), CUDA_R_16BF, m_d, n * d,
          ws.p16.data() + g * qc * nk, CUDA_R_16BF, m_nk, group * qc * nk, &zero, ws.o.data() + g * qc * d, CUDA_R_32F,
          m_d, group * qc * d, nkv, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    ANGELSLIM_CUDA_CHECK_LAUNCH(
        kernels::from_head_major(s, sm, ws.o.data(), qc, static_cast<int>(n_heads), static_cast<int>(d), q0, out, true),
        "from_head_major_kernel");
  }
}

void attention_varlen_bf16(CudaContext& ctx, const float* q, const float* k, const float* v,
                           std::span<const int64_t> seq_offsets, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                           float* out, VarlenAttentionWorkspace& ws) {
  ANGELSLIM_CHECK(head_dim == 64 || head_dim == 128, Unsupported,
                  "cuda::attention_varlen_bf16: head_dim = {} (the fused kernel handles 64, 128)", head_dim);
  ANGELSLIM_CHECK(n_heads >= 1 && n_kv_heads >= 1 && n_heads % n_kv_heads == 0 && n_heads <= 65535, InvalidInput,
                  "cuda::attention_varlen_bf16: n_heads {} must be a positive multiple of n_kv_heads {}", n_heads,
                  n_kv_heads);
  ANGELSLIM_CHECK(!seq_offsets.empty() && seq_offsets.front() == 0, InvalidInput,
                  "cuda::attention_varlen_bf16: seq_offsets must start at 0");
  for (std::size_t i = 0; i + 1 < seq_offsets.size(); ++i)
    ANGELSLIM_CHECK(seq_offsets[i + 1] >= seq_offsets[i] && seq_offsets[i + 1] - seq_offsets[i] <= kInt32Max,
                    InvalidInput, "cuda::attention_varlen_bf16: sequence {} spans [{}, {})", i, seq_offsets[i],
                    seq_offsets[i + 1]);
  const int64_t n = seq_offsets.back();
  if (n == 0) return;
  const int64_t qn = n * n_heads * head_dim, kvn = n * n_kv_heads * head_dim;
  ws.q16.ensure(static_cast<std::size_t>(qn));
  ws.k16.ensure(static_cast<std::size_t>(kvn));
  ws.v16.ensure(static_cast<std::size_t>(kvn));
  f32_to_bf16(ctx, q, ws.q16.data(), qn);
  f32_to_bf16(ctx, k, ws.k16.data(), kvn);
  f32_to_bf16(ctx, v, ws.v16.data(), kvn);
  if (!std::equal(seq_offsets.begin(), seq_offsets.end(), ws.offsets.begin(), ws.offsets.end())) {
    // 64-query tiles, the ones with the most keys (latest rows) first so the long blocks start early.
    struct Tile {
      int64_t begin, len, q0;
    };
    std::vector<Tile> tiles;
    for (std::size_t i = 0; i + 1 < seq_offsets.size(); ++i)
      for (int64_t q0 = 0; q0 < seq_offsets[i + 1] - seq_offsets[i]; q0 += 64)
        tiles.push_back({seq_offsets[i], seq_offsets[i + 1] - seq_offsets[i], q0});
    std::stable_sort(tiles.begin(), tiles.end(), [](const Tile& a, const Tile& b) { return a.q0 > b.q0; });
    ANGELSLIM_CHECK(n <= kInt32Max && static_cast<int64_t>(tiles.size()) <= kInt32Max, InvalidInput,
                    "cuda::attention_varlen_bf16: {} tokens in one batch (at most {})", n, kInt32Max);
    ws.tiles_host.clear();
    for (const auto& t : tiles)
      ws.tiles_host.insert(ws.tiles_host.end(),
                           {static_cast<int32_t>(t.begin), static_cast<int32_t>(t.len), static_cast<int32_t>(t.q0), 0});
    ws.tiles.ensure(ws.tiles_host.size());
    upload(ctx, ws.tiles_host.data(), ws.tiles_host.size(), ws.tiles.data());
    ws.n_tiles = static_cast<int64_t>(tiles.size());
    ws.offsets.assign(seq_offsets.begin(), seq_offsets.end());
  }
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::attention_varlen_bf16(ctx.stream(), ws.q16.data(), ws.k16.data(), ws.v16.data(),
                                                             reinterpret_cast<const int4*>(ws.tiles.data()), ws.n_tiles,
                                                             n_heads, n_kv_heads, head_dim, out, true),
                              "attention_varlen_kernel");
}

void abs_max_accumulate(CudaContext& ctx, const float* x, int64_t n, float* out) {
  check_nonneg(n, "abs_max_accumulate", "n");
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::abs_max(ctx.stream(), ctx.sm_count(), x, n, out), "abs_max_kernel");
}

void hessian_accumulate_bf16(CudaContext& ctx, const uint16_t* x16, int64_t n_tokens, int64_t n_in, float* h) {
  const int t = to_int(n_tokens, "n_tokens"), k = to_int(n_in, "n_in");
  if (t == 0 || k == 0) return;
  const float alpha = 1.0f, beta = 1.0f;
  // x row-major [t, k] is column-major A = k×t (lda k): C[k×k] += A·Aᵀ; the lower triangle is then mirrored.
  ANGELSLIM_CUBLAS_CHECK(cublas().gemm_ex(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, k, k, t, &alpha, x16, CUDA_R_16BF, k,
                                          x16, CUDA_R_16BF, k, &beta, h, CUDA_R_32F, k, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT));
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::mirror_lower(ctx.stream(), ctx.sm_count(), h, k), "mirror_lower_kernel");
}

void gather_rows_bf16(CudaContext& ctx, const uint16_t* table, int64_t d, const int32_t* ids, int64_t n,
                      uint16_t* out) {
  check_nonneg(d, "gather_rows_bf16", "d");
  check_nonneg(n, "gather_rows_bf16", "n");
  if (n * d == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::gather_rows_bf16(ctx.stream(), ctx.sm_count(), table, d, ids, n, out),
                              "gather_rows_bf16_kernel");
}

void split_bf16_terms(CudaContext& ctx, const float* w, int64_t n, uint16_t* t0, uint16_t* t1, uint16_t* t2,
                      unsigned int* counts) {
  check_nonneg(n, "split_bf16_terms", "n");
  if (n == 0) return;
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::split_bf16_terms(ctx.stream(), ctx.sm_count(), w, n, t0, t1, t2, counts),
                              "split_bf16_terms_kernel");
}

}  // namespace angelslim::cuda
