// Causal GQA attention for one sequence on the GPU (fp32 SIMT), tiled 64 queries × 64 keys per step so memory
// stays O(tile) at any length (8192 tokens: no 8192² score matrix). Two passes over the key tiles, after the
// CPU op: pass 1 finds each row's max m and Σexp(s−m) (online, rescaled), pass 2 recomputes the scores and
// accumulates P·V with p = exp(s−m)·(1/Σ), so bf16 mode rounds exactly the normalised probabilities (SPEC 3.4).
#include <cfloat>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda::kernels {

namespace {

constexpr int kBq = 64;            // query rows per block
constexpr int kBk = 64;            // keys per tile
constexpr int kLd = 68;            // padded row length of the 64-wide shared tiles (16-byte aligned rows)
constexpr int kAttnThreads = 256;  // 16 × 16 threads, each a 4×4 score micro-tile

// Q (transposed), one K-or-V tile, P: 87 KB for D = 128, so two blocks share an SM (227 KB); a separate V tile
// (119 KB, one block per SM) measured 1.58 ms for 2048 tokens × 16 heads on an H100.
template <int D>
constexpr int smem_floats() {
  return D * kLd /*Qt*/ + D * kLd /*Kt, then V as [kBk][D]*/ + kBq * kLd /*P*/;
}

// Scores of this thread's 4×4 micro-tile: acc[i][j] = Σ_d Q[ty*4+i, d] · K[tx*4+j, d].
template <int D>
__device__ __forceinline__ void score_tile(const float* Qt, const float* Kt, int tx, int ty, float acc[4][4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
#pragma unroll 8
  for (int d = 0; d < D; ++d) {
    const float4 a = *reinterpret_cast<const float4*>(Qt + d * kLd + ty * 4);
    const float4 b = *reinterpret_cast<const float4*>(Kt + d * kLd + tx * 4);
    const float av[4] = {a.x, a.y, a.z, a.w};
    const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
  }
}

// Loads keys [k0, k0+64) of kv head `kvh` (zero past n_k): transposed into Kt[d][c] (K) or as Vs[c][d] (V).
template <int D, bool kTranspose>
__device__ __forceinline__ void load_kv_tile(const float* src, int64_t kv_stride, int kvh, int k0, int n_k,
                                             float* dst) {
  for (int idx = threadIdx.x; idx < kBk * D; idx += kAttnThreads) {
    const int c = idx / D, d = idx % D;
    const int key = k0 + c;
    const float x = key < n_k ? src[static_cast<int64_t>(key) * kv_stride + static_cast<int64_t>(kvh) * D + d] : 0.0f;
    if (kTranspose)
      dst[d * kLd + c] = x;
    else
      dst[c * D + d] = x;
  }
}

template <int D>
__global__ void __launch_bounds__(kAttnThreads)
    attention_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, int n_q,
                     int n_past, int n_heads, int group, float scale, float* __restrict__ out, bool rb) {
  extern __shared__ float4 smem4[];
  float* Qt = reinterpret_cast<float*>(smem4);
  float* Kt = Qt + D * kLd;
  float* Vs = Kt;  // V reuses the K tile once the scores of a tile are computed
  float* P = Kt + D * kLd;

  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int qb = gridDim.x - 1 - blockIdx.x;  // heavy (late) query blocks first
  const int h = blockIdx.y, kvh = h / group;
  const int q0 = qb * kBq;
  const int n_k = n_past + n_q;
  const int64_t q_stride = static_cast<int64_t>(n_heads) * D;
  const int64_t kv_stride = static_cast<int64_t>(n_heads / group) * D;

  // Q tile, transposed: Qt[d][r]; rows past n_q repeat the last row (computed, never written).
  for (int idx = tid; idx < kBq * D; idx += kAttnThreads) {
    const int r = idx / D, d = idx % D;
    const int row = min(q0 + r, n_q - 1);
    Qt[d * kLd + r] = q[static_cast<int64_t>(row) * q_stride + static_cast<int64_t>(h) * D + d];
  }
  int pos[4];  // absolute positions of this thread's 4 query rows
#pragma unroll
  for (int i = 0; i < 4; ++i) pos[i] = n_past + q0 + ty * 4 + i;
  const int k_end = min(n_k, n_past + q0 + kBq);  // the block's last row sees keys [0, k_end)
  const int n_tiles = (k_end + kBk - 1) / kBk;

  // Pass 1: row max and Σ exp(s − max), online over the key tiles; the 16 threads of a row (same ty, one
  // half-warp) combine with xor shuffles over lanes 1, 2, 4, 8 and all hold the row's m and l.
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
  }
  float s[4][4];
  for (int t = 0; t < n_tiles; ++t) {
    const int k0 = t * kBk;
    __syncthreads();
    load_kv_tile<D, true>(k, kv_stride, kvh, k0, n_k, Kt);
    __syncthreads();
    score_tile<D>(Qt, Kt, tx, ty, s);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float tmax = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int key = k0 + tx * 4 + j;
        s[i][j] = (key <= pos[i] && key < n_k) ? s[i][j] * scale : -INFINITY;
        tmax = fmaxf(tmax, s[i][j]);
      }
#pragma unroll
      for (int o = 1; o < 16; o <<= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
      // Finite: key 0 is visible to every row, so the first tile already gives each row a finite max.
      const float m_new = fmaxf(m[i], tmax);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) sum += expf(s[i][j] - m_new);
#pragma unroll
      for (int o = 1; o < 16; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      l[i] = l[i] * expf(m[i] - m_new) + sum;
      m[i] = m_new;
    }
  }
  float inv[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) inv[i] = 1.0f / l[i];

  // Pass 2: P = exp(s − m)·(1/l) (bf16-rounded in bf16 mode), O += P·V.
  constexpr int kJ = D / 64;  // 64-column groups of the output row held by each thread
  float o[4][kJ][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int jj = 0; jj < kJ; ++jj)
#pragma unroll
      for (int j = 0; j < 4; ++j) o[i][jj][j] = 0.0f;

  for (int t = 0; t < n_tiles; ++t) {
    const int k0 = t * kBk;
    __syncthreads();
    load_kv_tile<D, true>(k, kv_stride, kvh, k0, n_k, Kt);
    __syncthreads();
    score_tile<D>(Qt, Kt, tx, ty, s);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float p[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int key = k0 + tx * 4 + j;
        const bool vis = key <= pos[i] && key < n_k;
        p[j] = vis ? maybe_round(__fmul_rn(expf(s[i][j] * scale - m[i]), inv[i]), rb) : 0.0f;
      }
      *reinterpret_cast<float4*>(P + (ty * 4 + i) * kLd + tx * 4) = make_float4(p[0], p[1], p[2], p[3]);
    }
    __syncthreads();  // every thread is done reading Kt
    load_kv_tile<D, false>(v, kv_stride, kvh, k0, n_k, Vs);
    __syncthreads();
#pragma unroll 2
    for (int c = 0; c < kBk; c += 4) {
      float pa[4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float4 x = *reinterpret_cast<const float4*>(P + (ty * 4 + i) * kLd + c);
        pa[i][0] = x.x;
        pa[i][1] = x.y;
        pa[i][2] = x.z;
        pa[i][3] = x.w;
      }
#pragma unroll
      for (int cc = 0; cc < 4; ++cc) {
#pragma unroll
        for (int jj = 0; jj < kJ; ++jj) {
          const float4 b = *reinterpret_cast<const float4*>(Vs + (c + cc) * D + jj * 64 + tx * 4);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            o[i][jj][0] = fmaf(pa[i][cc], b.x, o[i][jj][0]);
            o[i][jj][1] = fmaf(pa[i][cc], b.y, o[i][jj][1]);
            o[i][jj][2] = fmaf(pa[i][cc], b.z, o[i][jj][2]);
            o[i][jj][3] = fmaf(pa[i][cc], b.w, o[i][jj][3]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = q0 + ty * 4 + i;
    if (row >= n_q) continue;
    float* orow = out + static_cast<int64_t>(row) * q_stride + static_cast<int64_t>(h) * D;
#pragma unroll
    for (int jj = 0; jj < kJ; ++jj)
#pragma unroll
      for (int j = 0; j < 4; ++j) orow[jj * 64 + tx * 4 + j] = maybe_round(o[i][jj][j], rb);
  }
}

template <int D>
cudaError_t launch(cudaStream_t s, const float* q, const float* k, const float* v, int64_t n_q, int64_t n_past,
                   int64_t n_heads, int64_t n_kv_heads, float* out, bool rb) {
  constexpr int bytes = smem_floats<D>() * static_cast<int>(sizeof(float));
  cudaError_t e = cudaFuncSetAttribute(attention_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e != cudaSuccess) return e;
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  const dim3 grid(static_cast<unsigned>((n_q + kBq - 1) / kBq), static_cast<unsigned>(n_heads));
  attention_kernel<D><<<grid, kAttnThreads, bytes, s>>>(q, k, v, static_cast<int>(n_q), static_cast<int>(n_past),
                                                        static_cast<int>(n_heads),
                                                        static_cast<int>(n_heads / n_kv_heads), scale, out, rb);
  return cudaGetLastError();
}

}  // namespace

cudaError_t attention(cudaStream_t s, const float* q, const float* k, const float* v, int64_t n_q, int64_t n_past,
                      int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float* out, bool rb) {
  if (head_dim == 64) return launch<64>(s, q, k, v, n_q, n_past, n_heads, n_kv_heads, out, rb);
  return launch<128>(s, q, k, v, n_q, n_past, n_heads, n_kv_heads, out, rb);
}

}  // namespace angelslim::cuda::kernels
