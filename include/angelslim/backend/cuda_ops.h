// CUDA backend ops (issue 6): host API on device pointers mirroring include/angelslim/ops/cpu_ops.h, plus the
// pieces a GPU calibration needs (bf16 GEMM, fp8 fake-quant, abs-max, MoE routing/gather/scatter, Hessians).
// Every op is enqueued on the context's stream; every CUDA/cuBLAS call and kernel launch is checked (Internal).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "angelslim/backend/cuda_libs.h"
#include "angelslim/core/error.h"

namespace angelslim::cuda {

// Throws Internal("<what> failed: <message> (<file>:<line>)"). `what` is the checked call or kernel name.
[[noreturn]] void throw_cuda_error(const char* what, const char* message, const char* file, int line);

}  // namespace angelslim::cuda

// Checks a cudaError_t-returning call; throws Internal naming the call.
#define ANGELSLIM_CUDA_CHECK(call)                                                                      \
  do {                                                                                                  \
    const cudaError_t angelslim_e_ = (call);                                                            \
    if (angelslim_e_ != cudaSuccess)                                                                    \
      ::angelslim::cuda::throw_cuda_error(#call, cudaGetErrorString(angelslim_e_), __FILE__, __LINE__); \
  } while (0)

// Checks a cublasStatus_t-returning call; throws Internal naming the call.
#define ANGELSLIM_CUBLAS_CHECK(call)                                                                          \
  do {                                                                                                        \
    const cublasStatus_t angelslim_s_ = (call);                                                               \
    if (angelslim_s_ != CUBLAS_STATUS_SUCCESS)                                                                \
      ::angelslim::cuda::throw_cuda_error(#call, ::angelslim::cuda::cublas().get_status_string(angelslim_s_), \
                                          __FILE__, __LINE__);                                                \
  } while (0)

// After a kernel launch: checks cudaGetLastError (or the launcher's returned error) naming the kernel.
#define ANGELSLIM_CUDA_CHECK_LAUNCH(err, kernel_name)                                                           \
  do {                                                                                                          \
    const cudaError_t angelslim_e_ = (err);                                                                     \
    if (angelslim_e_ != cudaSuccess)                                                                            \
      ::angelslim::cuda::throw_cuda_error("launch of " kernel_name, cudaGetErrorString(angelslim_e_), __FILE__, \
                                          __LINE__);                                                            \
  } while (0)

namespace angelslim::cuda {

// One linear's weights on the device, [rows, cols] row-major, exactly as the host holds them: fp32, or bf16 bits when
// every weight is bf16-representable (exactly one of the two non-null; both null: no exact device copy).
struct DeviceWeightsView {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
  int64_t rows = 0, cols = 0;
};

// Number of usable CUDA devices; 0 when there is no driver, no device, or the runtime reports an error.
int device_count();

// ANGELSLIM_CUDA_LEGACY=1 in the environment (read once): the GPU path as of 2026-11-23 for A/B timing -- no stage
// cache (cuda_calib.h), whole-sequence attention chunks with the three-read softmax, no CUDA warm-up thread. Results
// are those of the current path up to the GEMM summation order of the attention scores.
bool cuda_legacy();

// An owning device allocation of n elements of T (cudaMalloc; move-only). Contents start undefined.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) { reset(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  std::size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }

  // Reallocates to exactly n elements (contents lost; the old memory is freed after the device is idle).
  void reset(std::size_t n) {
    release();
    if (n == 0) return;
    void* p = nullptr;
    ANGELSLIM_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
    ptr_ = static_cast<T*>(p);
    n_ = n;
  }
  // Grows to at least n elements (contents lost when it grows).
  void ensure(std::size_t n) {
    if (n > n_) reset(n);
  }

 private:
  void release() noexcept {
    // cudaFree synchronises the device, so pending kernels using the buffer finish first. Errors are ignored
    // here: a destructor must not throw, and a sticky error resurfaces at the next checked call.
    if (ptr_) (void)cudaFree(ptr_);
    ptr_ = nullptr;
    n_ = 0;
  }
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

// An owning page-locked host allocation of n elements of T (cudaMallocHost; move-only), for asynchronous copies.
template <class T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t n) { reset(n); }
  ~PinnedBuffer() { release(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  std::size_t size() const { return n_; }
  // Reallocates to exactly n elements (contents lost; callers make sure no copy still uses the old memory).
  void reset(std::size_t n) {
    release();
    if (n == 0) return;
    void* p = nullptr;
    ANGELSLIM_CUDA_CHECK(cudaMallocHost(&p, n * sizeof(T)));
    ptr_ = static_cast<T*>(p);
    n_ = n;
  }

 private:
  void release() noexcept {
    if (ptr_) (void)cudaFreeHost(ptr_);
    ptr_ = nullptr;
    n_ = 0;
  }
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

// A device, a non-blocking stream, a cuBLAS handle bound to it (default math: no TF32) and its workspace.
class CudaContext {
 public:
  // Throws Unsupported when `device` does not exist.
  explicit CudaContext(int device = 0);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  int device() const { return device_; }
  int sm_count() const { return sm_count_; }
  // Waits for all work on the stream; throws Internal if any of it failed.
  void synchronize() const;
  // Synchronous copies of `bytes` between pageable host memory and the device, after the work queued on the stream.
  // Large ones go through two page-locked staging chunks: the link then runs at its pinned speed, and the host's
  // copy of one chunk (on a few threads, which also take the page faults of fresh destination memory) overlaps the
  // transfer of the next. Not thread-safe (one staging pair per context).
  void copy_to_host(void* host, const void* dev, std::size_t bytes);
  void copy_to_device(void* dev, const void* host, std::size_t bytes);

 private:
  void ensure_staging();

  int device_ = 0;
  int sm_count_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer<unsigned char> workspace_;
  PinnedBuffer<unsigned char> staging_[2];
  cudaEvent_t staged_[2] = {nullptr, nullptr};
};

// Synchronous host <-> device copies on ctx's stream (the stream is synchronised before returning).
template <class T>
void upload(CudaContext& ctx, const T* host, std::size_t n, T* dev) {
  ctx.copy_to_device(dev, host, n * sizeof(T));
}
template <class T>
void download(CudaContext& ctx, const T* dev, std::size_t n, T* host) {
  ctx.copy_to_host(host, dev, n * sizeof(T));
}
template <class T>
DeviceBuffer<T> to_device(CudaContext& ctx, const std::vector<T>& host) {
  DeviceBuffer<T> b(host.size());
  upload(ctx, host.data(), host.size(), b.data());
  return b;
}
template <class T>
std::vector<T> to_host(CudaContext& ctx, const T* dev, std::size_t n) {
  std::vector<T> h(n);
  download(ctx, dev, n, h.data());
  return h;
}

// memcpy of `bytes` on up to four host threads (pinned staging: the copy into page-locked memory is the slow part).
void host_copy(void* dst, const void* src, std::size_t bytes);

// ---------------------------------------------------------------------------------------------------- ops
// Conventions (as cpu_ops.h): activations row-major [n_tokens, d]; linear weights [n_out, n_in] (PyTorch);
// fp32 unless stated; "bf16" buffers hold raw bfloat16 bits as uint16_t. Every pointer is a device pointer
// unless its name ends in _host. round_bf16 rounds results to the nearest bf16 (ties to even), as
// angelslim::round_bf16 does. Sizes must fit the kernels' int32 indexing where stated (InvalidInput otherwise).

// y[n_tokens, n_out] = x[n_tokens, n_in] · w[n_out, n_in]ᵀ + beta·y (+ bias[n_out]). cuBLAS SGEMM with fp32
// inputs and fp32 compute (no TF32): the reference-mode GEMM.
void linear(CudaContext& ctx, const float* x, int64_t n_tokens, int64_t n_in, const float* w, int64_t n_out,
            const float* bias, float* y, float beta = 0.0f);

// y[n_tokens, n_out] (fp32) = alpha · x[n_tokens, n_in] (bf16) · w[n_out, n_in] (bf16)ᵀ + beta·y (+ bias[n_out],
// fp32). cublasGemmEx, BF16 inputs, FP32 accumulation (tensor cores): the fast path. Products of bf16 values
// are exact in fp32, so on bf16-representable data this computes the same sums as `linear` up to order.
void linear_bf16(CudaContext& ctx, const uint16_t* x, int64_t n_tokens, int64_t n_in, const uint16_t* w, int64_t n_out,
                 const float* bias, float* y, float alpha = 1.0f, float beta = 0.0f);

// GEMM epilogue in place on y[n_tokens, n_out]: y = y·scale[0] (scale: device scalar, nullptr = 1)
// + bias[n_out] (nullptr = none), then optionally rounded to bf16. The product is rounded before the add.
void bias_scale(CudaContext& ctx, float* y, int64_t n_tokens, int64_t n_out, const float* scale, const float* bias,
                bool round_bf16);

// RMSNorm over rows of width n: y = w ⊙ (x · 1/sqrt(mean(x²) + eps)); with round_bf16 the normalised value and
// the product are each rounded (HF form, SPEC 3.2). x, y: [rows, n]; w: [n]. In place allowed (y == x).
void rms_norm(CudaContext& ctx, const float* x, int64_t rows, int64_t n, const float* w, float eps, float* y,
              bool round_bf16);

// Rotate-half RoPE in place on x [n_tokens, n_heads, head_dim] (head_dim even); token t has position pos0 + t.
// inv_freq: [head_dim/2]. cos/sin in fp32 (accurate cosf/sinf); round_bf16 rounds cos, sin and the outputs.
void rope(CudaContext& ctx, float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* inv_freq,
          int64_t pos0, bool round_bf16);

// Causal grouped-query attention for one sequence (as cpu::attention). q: [n_q, n_heads, head_dim]; query i sits
// at absolute position n_past + i; k, v: [n_past + n_q, n_kv_heads, head_dim]; out: [n_q, n_heads, head_dim].
// head_dim ∈ {64, 128} (Unsupported otherwise); n_heads a multiple of n_kv_heads. Scores and softmax in fp32.
// Tiled in 64×64 blocks, two passes over the keys (row max/sum, then P·V with the final normalisation, so
// round_bf16 can round the normalised probabilities exactly where the CPU does): memory O(tile), never a full
// score matrix. round_bf16 rounds the probabilities and the output.
void attention(CudaContext& ctx, const float* q, const float* k, const float* v, int64_t n_q, int64_t n_past,
               int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float* out, bool round_bf16);

// Scratch of attention_bf16_gemm, grown on demand (reuse one per layer/stream).
struct AttentionWorkspace {
  DeviceBuffer<uint16_t> q16, k16, v16, p16;  // head-major bf16 q/k/v, probabilities
  DeviceBuffer<float> s, o;                   // scores, head-major output chunk
};

// Causal GQA attention of one sequence at positions 0.. (no past) on BF16 tensor-core GEMMs (cuBLAS): scores =
// scale·QKᵀ (FP32 accumulation), the CPU op's softmax (exp(s − m)·(1/Σ), rounded to bf16), P·V (FP32 accumulation),
// output rounded to bf16. For the bf16 forward mode only: q, k, v must be bf16-representable (as they are at the
// storage points), and then this equals attention(..., round_bf16 = true) up to fp32 summation order. Shapes as
// attention with n_past = 0 (any head_dim that is a multiple of 8); query rows are processed in chunks so the score
// matrix stays under ~256 MiB.
void attention_bf16_gemm(CudaContext& ctx, const float* q, const float* k, const float* v, int64_t n_tokens,
                         int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float* out, AttentionWorkspace& ws);

// Embedding lookup in bf16: out[t, :] = table[ids[t], :] (rows of d values), each value through fp32 and back as the
// host's bf16 -> fp32 -> bf16 conversion (bit-exact; a NaN comes out quiet). ids must lie in [0, rows of table).
void gather_rows_bf16(CudaContext& ctx, const uint16_t* table, int64_t d, const int32_t* ids, int64_t n, uint16_t* out);

// Scratch of attention_varlen_bf16, grown on demand (reuse one per layer/stream): bf16 copies of q/k/v and the
// query-tile table of the last batch layout (rebuilt only when the sequence offsets change).
struct VarlenAttentionWorkspace {
  DeviceBuffer<uint16_t> q16, k16, v16;
  DeviceBuffer<int32_t> tiles;   // 4 ints a 64-query tile: first token, length, first row, unused
  std::vector<int64_t> offsets;  // the layout the table was built for
  std::vector<int32_t> tiles_host;
  int64_t n_tiles = 0;
};

// Causal GQA attention of a ragged batch in the bf16 forward mode, fused on tensor cores: sequence s holds tokens
// [seq_offsets[s], seq_offsets[s + 1]) at positions 0.. (no past, no attention across sequences); q: [n_tokens,
// n_heads, head_dim], k, v: [n_tokens, n_kv_heads, head_dim], out: [n_tokens, n_heads, head_dim] with n_tokens =
// seq_offsets.back(). q, k, v must be bf16-representable (as they are at the storage points). Scores = scale·QKᵀ
// with FP32 accumulation, the CPU op's softmax (exp(s − m)·(1/Σ) rounded to bf16, masked keys 0), P·V with FP32
// accumulation, output rounded to bf16: equal to attention(..., round_bf16 = true) of each sequence up to fp32
// summation order. head_dim ∈ {64, 128} (Unsupported otherwise). Scores never go to global memory; one launch for
// the whole batch (plus the three bf16 conversions).
void attention_varlen_bf16(CudaContext& ctx, const float* q, const float* k, const float* v,
                           std::span<const int64_t> seq_offsets, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                           float* out, VarlenAttentionWorkspace& ws);

// out[i] = silu(gate[i]) · up[i], silu(x) = x / (1 + exp(-x)); n elements. out may alias gate or up.
void swiglu(CudaContext& ctx, const float* gate, const float* up, float* out, int64_t n, bool round_bf16);

// Residual add: out[i] = a[i] + b[i] (n elements; out may alias a or b).
void add(CudaContext& ctx, const float* a, const float* b, float* out, int64_t n, bool round_bf16);

// In-place bf16 rounding of n values (NaN stays NaN).
void round_bf16_inplace(CudaContext& ctx, float* x, int64_t n);

// Conversions: y[n] (bf16 bits) = bf16(x[n]) round to nearest even; and back (exact).
void f32_to_bf16(CudaContext& ctx, const float* x, uint16_t* y, int64_t n);
void bf16_to_f32(CudaContext& ctx, const uint16_t* x, float* y, int64_t n);

// FP8 e4m3 fake-quant: y[i] = e4m3(x[i] / s) · s with s = scale[0] (device scalar, > 0), saturating to ±448
// (__NV_SATFINITE), round to nearest even (SPEC 4.3.2). y may alias x.
void fake_quant_fp8(CudaContext& ctx, const float* x, int64_t n, const float* scale, float* y);
// FP8 e4m3 codes as bf16: q[i] = e4m3(x[i] / s) (exactly representable in bf16), for linear_bf16 with
// bias_scale(scale) afterwards.
void quant_fp8_bf16(CudaContext& ctx, const float* x, int64_t n, const float* scale, uint16_t* q);

// out[0] = max_i |x[i]| over n values (0 when n == 0). out: device scalar.
void abs_max(CudaContext& ctx, const float* x, int64_t n, float* out);
// Per column: out[c] = max_t |x[t, c]| over x [rows, cols] (0 when rows == 0). out: [cols].
void abs_max_columns(CudaContext& ctx, const float* x, int64_t rows, int64_t cols, float* out);
// Dynamic FP8 scale: scale[0] = max(amax[0], 1e-12) / 448 (device scalars).
void fp8_scale_from_amax(CudaContext& ctx, const float* amax, float* scale);

// MoE router decision per token (SPEC 3.6): logits [n_tokens, n_experts] fp32 are overwritten with the softmax
// probabilities (fp32); experts[n_tokens, top_k] int32 get the top-k by probability, descending, exact ties to
// the lower index; weights[n_tokens, top_k] = p / Σ_topk p (rounded to bf16 when round_bf16).
// n_experts ≤ 256, 1 ≤ top_k ≤ n_experts.
void moe_route(CudaContext& ctx, float* logits, int64_t n_tokens, int64_t n_experts, int64_t top_k, int32_t* experts,
               float* weights, bool round_bf16);

// Groups the router decisions by expert, deterministically (tokens ascending within each expert, as the CPU
// loop does). experts, weights: [n_tokens, top_k] from moe_route. Outputs: offsets[n_experts + 1] int64
// (expert e owns slots offsets[e] .. offsets[e+1]-1; an expert with no tokens has an empty range),
// token_index[n_tokens·top_k] int64 (row in the layer's batch), slot_weight[n_tokens·top_k] fp32.
void moe_expert_lists(CudaContext& ctx, const int32_t* experts, const float* weights, int64_t n_tokens, int64_t top_k,
                      int64_t n_experts, int64_t* offsets, int64_t* token_index, float* slot_weight);

// out[i, :] = x[index[i], :] for i < m; x: [*, d], index: [m] int64, out: [m, d].
void gather_rows(CudaContext& ctx, const float* x, int64_t d, const int64_t* index, int64_t m, float* out);
// out[index[i], :] += weight[i] · y[i, :] (the product rounded to bf16 when round_bf16; the sum is not).
// y: [m, d]; index: [m] int64, distinct within one call; weight: [m] (nullptr = 1); out: [*, d].
void scatter_add_rows(CudaContext& ctx, const float* y, int64_t d, const int64_t* index, const float* weight, int64_t m,
                      float* out, bool round_bf16);

// Hessian accumulation: h[n_in, n_in] += alpha · xᵀ x for x [n_tokens, n_in] (cublasSsyrk, fp32 compute, then the
// lower triangle mirrored so h stays exactly symmetric). h must be symmetric on entry (e.g. zero).
void hessian_accumulate(CudaContext& ctx, const float* x, int64_t n_tokens, int64_t n_in, float alpha, float* h);

// Running abs-max: out[0] = max(out[0], max_i |x[i]|) over n values, compared as bit patterns, so a NaN or Inf
// input leaves out[0] non-finite or above FLT_MAX (callers check). out: device scalar, >= 0 on entry.
void abs_max_accumulate(CudaContext& ctx, const float* x, int64_t n, float* out);

// h[n_in, n_in] += x16ᵀ x16 for x16 [n_tokens, n_in] bf16 row-major: BF16-input GEMM with FP32 accumulation
// (tensor cores), then the lower triangle mirrored so h stays exactly symmetric (symmetric on entry). On
// bf16-representable data this is hessian_accumulate with alpha 1 up to the fp32 summation order.
void hessian_accumulate_bf16(CudaContext& ctx, const uint16_t* x16, int64_t n_tokens, int64_t n_in, float* h);

// Splits w[n] (fp32) into three bf16 terms with t0 + t1 + t2 == w exactly (t0 = bf16(w), t1 = bf16(w - t0),
// t2 = bf16(w - t0 - t1); every step exact in fp32), so x·w over bf16 x is the sum of three exact-product GEMMs.
// Non-finite w: t0 = bf16(w), t1 = t2 = 0. counts[3] (device uint32, accumulated: zero first) += elements with
// t1 != 0, with t2 != 0, and with w != t0 + t1 + t2 (a residue below the smallest bf16 normal).
void split_bf16_terms(CudaContext& ctx, const float* w, int64_t n, uint16_t* t0, uint16_t* t1, uint16_t* t2,
                      unsigned int* counts);

}  // namespace angelslim::cuda
