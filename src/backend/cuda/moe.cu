// MoE kernels of the CUDA backend (SPEC 3.6): router softmax + top-k (one thread per token, the CPU loop's order
// of operations), deterministic per-expert token lists (a stable counting sort, one block per expert), row
// gather/scatter for running experts on their tokens, and the triangle mirror of the Hessian accumulation.
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda::kernels {

namespace {

constexpr int kMaxExperts = 256;

__global__ void moe_route_kernel(float* logits, int64_t n_tokens, int n_experts, int top_k, int32_t* experts,
                                 float* weights, bool rb) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n_tokens) return;
  float* r = logits + t * n_experts;
  float mx = -INFINITY;
  for (int e = 0; e < n_experts; ++e) mx = fmaxf(mx, r[e]);
  float sum = 0.0f;
  for (int e = 0; e < n_experts; ++e) {
    const float x = expf(r[e] - mx);
    r[e] = x;
    sum = __fadd_rn(sum, x);
  }
  for (int e = 0; e < n_experts; ++e) r[e] = __fdiv_rn(r[e], sum);
  // Top-k by repeated arg-max: a strict '>' over ascending indices keeps the lower index on exact ties,
  // which is the order std::stable_sort gives on the CPU.
  uint32_t taken[kMaxExperts / 32] = {};
  int32_t* top = experts + t * top_k;
  float tsum = 0.0f;
  for (int i = 0; i < top_k; ++i) {
    int best = -1;
    float bp = 0.0f;
    for (int e = 0; e < n_experts; ++e) {
      if ((taken[e >> 5] >> (e & 31)) & 1u) continue;
      if (best < 0 || r[e] > bp) {
        best = e;
        bp = r[e];
      }
    }
    taken[best >> 5] |= 1u << (best & 31);
    top[i] = best;
    tsum = __fadd_rn(tsum, bp);
  }
  for (int i = 0; i < top_k; ++i) weights[t * top_k + i] = maybe_round(__fdiv_rn(r[top[i]], tsum), rb);
}

// Block e counts the slots routed to expert e into offsets[e + 1].
__global__ void moe_count_kernel(const int32_t* experts, int64_t n_slots, int64_t* offsets) {
  const int e = blockIdx.x;
  int64_t count = 0;
  for (int64_t c0 = 0; c0 < n_slots; c0 += blockDim.x) {
    const int64_t i = c0 + threadIdx.x;
    count += __syncthreads_count(i < n_slots && experts[i] == e);
  }
  if (threadIdx.x == 0) offsets[e + 1] = count;
}

__global__ void moe_scan_kernel(int64_t* offsets, int n_experts) {
  offsets[0] = 0;
  for (int e = 0; e < n_experts; ++e) offsets[e + 1] += offsets[e];
}

// Block e writes its slots in ascending slot order (= ascending token): a block-wide ballot prefix per chunk.
__global__ void moe_fill_kernel(const int32_t* experts, const float* weights, int64_t n_slots, int top_k,
                                const int64_t* offsets, int64_t* token_index, float* slot_weight) {
  __shared__ int warp_counts[32];
  const int e = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  int64_t base = offsets[e];
  for (int64_t c0 = 0; c0 < n_slots; c0 += blockDim.x) {
    const int64_t i = c0 + threadIdx.x;
    const bool mine = i < n_slots && experts[i] == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < n_warps; ++w) {
      if (w < warp) before += warp_counts[w];
      total += warp_counts[w];
    }
    if (mine) {
      const int64_t pos = base + before + __popc(ballot & ((1u << lane) - 1u));
      token_index[pos] = i / top_k;
      slot_weight[pos] = weights[i];
    }
    base += total;
    __syncthreads();  // warp_counts is rewritten by the next chunk
  }
}

#define GRID_STRIDE(i, n)                                                                \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

__global__ void gather_rows_kernel(const float* x, int64_t d, const int64_t* index, int64_t m, float* out) {
  GRID_STRIDE(i, m * d) out[i] = x[index[i / d] * d + i % d];
}

__global__ void scatter_add_rows_kernel(const float* y, int64_t d, const int64_t* index, const float* weight, int64_t m,
                                        float* out, bool rb) {
  GRID_STRIDE(i, m * d) {
    const int64_t r = i / d;
    const float p = weight ? __fmul_rn(weight[r], y[i]) : y[i];
    float* o = out + index[r] * d + i % d;
    *o = __fadd_rn(*o, maybe_round(p, rb));
  }
}

// Column-major n×n: copy (b, a) of the lower triangle onto (a, b) of the upper one.
__global__ void mirror_lower_kernel(float* h, int64_t n) {
  GRID_STRIDE(idx, n * n) {
    const int64_t a = idx % n, b = idx / n;
    if (a < b) h[a + b * n] = h[b + a * n];
  }
}

}  // namespace

cudaError_t moe_route(cudaStream_t s, float* logits, int64_t n_tokens, int64_t n_experts, int64_t top_k,
                      int32_t* experts, float* weights, bool rb) {
  constexpr int kT = 128;
  const auto blocks = static_cast<unsigned>((n_tokens + kT - 1) / kT);
  moe_route_kernel<<<blocks, kT, 0, s>>>(logits, n_tokens, static_cast<int>(n_experts), static_cast<int>(top_k),
                                         experts, weights, rb);
  return cudaGetLastError();
}

cudaError_t moe_expert_lists(cudaStream_t s, const int32_t* experts, const float* weights, int64_t n_tokens,
                             int64_t top_k, int64_t n_experts, int64_t* offsets, int64_t* token_index,
                             float* slot_weight) {
  const int64_t n_slots = n_tokens * top_k;
  const auto e = static_cast<unsigned>(n_experts);
  moe_count_kernel<<<e, kThreads, 0, s>>>(experts, n_slots, offsets);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  moe_scan_kernel<<<1, 1, 0, s>>>(offsets, static_cast<int>(n_experts));
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  moe_fill_kernel<<<e, kThreads, 0, s>>>(experts, weights, n_slots, static_cast<int>(top_k), offsets, token_index,
                                         slot_weight);
  return cudaGetLastError();
}

cudaError_t gather_rows(cudaStream_t s, int sm, const float* x, int64_t d, const int64_t* index, int64_t m,
                        float* out) {
  gather_rows_kernel<<<grid_for(m * d, sm), kThreads, 0, s>>>(x, d, index, m, out);
  return cudaGetLastError();
}

cudaError_t scatter_add_rows(cudaStream_t s, int sm, const float* y, int64_t d, const int64_t* index,
                             const float* weight, int64_t m, float* out, bool rb) {
  scatter_add_rows_kernel<<<grid_for(m * d, sm), kThreads, 0, s>>>(y, d, index, weight, m, out, rb);
  return cudaGetLastError();
}

cudaError_t mirror_lower(cudaStream_t s, int sm, float* h, int64_t n) {
  mirror_lower_kernel<<<grid_for(n * n, sm), kThreads, 0, s>>>(h, n);
  return cudaGetLastError();
}

}  // namespace angelslim::cuda::kernels
