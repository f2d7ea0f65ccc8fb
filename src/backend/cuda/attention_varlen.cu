// Fused causal GQA attention over a ragged batch of sequences on bf16 tensor cores (mma.sync m16n8k16, FP32
// accumulation), for the bf16 forward mode (cuda_ops.h attention_varlen_bf16). One block is a 64-query tile of one
// sequence and one head; each of its 4 warps owns 16 query rows and keeps its Q fragments and its output tile in
// registers. Like the SIMT kernel (attention.cu), two passes over the key tiles so the probabilities are the CPU
// op's normalised p = exp(s − m)·(1/Σ) rounded to bf16 (SPEC 3.4): pass 1 finds each row's max m and Σexp(s − m)
// (online, rescaled), pass 2 recomputes the scores, forms bf16 p in registers (the score fragment's layout is the
// next MMA's A-operand layout) and accumulates P·V. No score matrix touches global memory.
#include <cfloat>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace angelslim::cuda::kernels {

namespace {

constexpr int kTileQ = 64;  // query rows per block (4 warps × 16)
constexpr int kTileK = 64;  // keys per tile
constexpr int kWarps = 4;
constexpr int kPad = 8;  // bf16 padding of a shared-memory row: 16-byte aligned rows, conflict-free ldmatrix

__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8×8 b16 matrices from shared memory; lane i gives the row address of matrix i/8, row i%8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const uint16_t* p) {
  const auto a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const uint16_t* p) {
  const auto a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return static_cast<uint32_t>(f32_to_bf16_bits(lo)) | (static_cast<uint32_t>(f32_to_bf16_bits(hi)) << 16);
}

// Keys [k0, k0 + 64) of kv head `kvh` of one sequence into a [64][D + kPad] bf16 tile (zeros past n_k), 16 bytes a
// thread at a time.
template <int D>
__device__ __forceinline__ void load_tile(const uint16_t* __restrict__ src, int64_t row_stride, int kvh, int k0,
                                          int n_k, uint16_t* dst) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per key row
  for (int idx = threadIdx.x; idx < kTileK * kChunks; idx += kWarps * 32) {
    const int r = idx / kChunks, c = idx % kChunks;
    uint4 x = make_uint4(0, 0, 0, 0);
    if (k0 + r < n_k)
      x = *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(k0 + r) * row_stride +
                                          static_cast<int64_t>(kvh) * D + c * 8);
    *reinterpret_cast<uint4*>(dst + r * (D + kPad) + c * 8) = x;
  }
}

// S (16 rows × 64 keys of this warp) = Q_w · K_tileᵀ: s[nt][·] is the C fragment of keys nt·8 .. nt·8 + 7.
template <int D>
__device__ __forceinline__ void warp_scores(const uint32_t (&qa)[D / 16][4], const uint16_t* Ks, int lane,
                                            float (&s)[8][4]) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) s[nt][j] = 0.0f;
  const int mi = lane >> 3, ri = lane & 7;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int nt = 0; nt < 8; nt += 2) {
      // Matrices: (keys nt·8.., dims kk·16..), (keys nt·8.., dims +8), (keys +8, dims kk·16..), (keys +8, dims +8):
      // b0/b1 of key groups nt and nt + 1.
      uint32_t b[4];
      ldmatrix_x4(b, Ks + (nt * 8 + ri + (mi >> 1) * 8) * (D + kPad) + kk * 16 + (mi & 1) * 8);
      mma_bf16(s[nt], qa[kk], b[0], b[1]);
      mma_bf16(s[nt + 1], qa[kk], b[2], b[3]);
    }
  }
}

// tiles[i] = {first token of the sequence, its length, first query row of the tile}; heavy (late) tiles first.
template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    attention_varlen_kernel(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                            const uint16_t* __restrict__ v, const int4* __restrict__ tiles, int n_heads, int group,
                            float scale, float* __restrict__ out, bool rb) {
  __shared__ __align__(16) uint16_t Ks[kTileK * (D + kPad)];
  __shared__ __align__(16) uint16_t Vs[kTileK * (D + kPad)];
  const int4 tile = tiles[blockIdx.x];
  const int64_t base = tile.x;
  const int len = tile.y, q0 = tile.z;
  const int h = blockIdx.y, kvh = h / group;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t q_stride = static_cast<int64_t>(n_heads) * D;
  const int64_t kv_stride = static_cast<int64_t>(n_heads / group) * D;
  const uint16_t* kseq = k + base * kv_stride;
  const uint16_t* vseq = v + base * kv_stride;

  // This lane's two query rows (rows past the sequence repeat its last row: computed, never written).
  const int r_lo = q0 + warp * 16 + g, r_hi = r_lo + 8;
  const int64_t t_lo = base + min(r_lo, len - 1), t_hi = base + min(r_hi, len - 1);
  uint32_t qa[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const uint16_t* lo = q + t_lo * q_stride + static_cast<int64_t>(h) * D + kk * 16 + t4 * 2;
    const uint16_t* hi = q + t_hi * q_stride + static_cast<int64_t>(h) * D + kk * 16 + t4 * 2;
    qa[kk][0] = *reinterpret_cast<const uint32_t*>(lo);
    qa[kk][1] = *reinterpret_cast<const uint32_t*>(hi);
    qa[kk][2] = *reinterpret_cast<const uint32_t*>(lo + 8);
    qa[kk][3] = *reinterpret_cast<const uint32_t*>(hi + 8);
  }
  const int k_end = min(len, q0 + kTileQ);  // the block's last row sees keys [0, k_end)
  const int n_tiles = (k_end + kTileK - 1) / kTileK;

  // Pass 1: row max and Σ exp(s − max), online over the key tiles; the 4 lanes of a row (one quad) combine.
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float s[8][4];
  for (int t = 0; t < n_tiles; ++t) {
    const int k0 = t * kTileK;
    __syncthreads();
    load_tile<D>(kseq, kv_stride, kvh, k0, len, Ks);
    __syncthreads();
    warp_scores<D>(qa, Ks, lane, s);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int pos = half ? r_hi : r_lo;
      float tmax = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int key = k0 + nt * 8 + t4 * 2 + j;
          float& x = s[nt][half * 2 + j];
          x = (key <= pos && key < len) ? x * scale : -INFINITY;
          tmax = fmaxf(tmax, x);
        }
      tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
      tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
      // Finite: key 0 is visible to every row, so the first tile gives each row a finite max.
      const float m_new = fmaxf(m[half], tmax);
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int j = 0; j < 2; ++j) sum += expf(s[nt][half * 2 + j] - m_new);
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      l[half] = l[half] * expf(m[half] - m_new) + sum;
      m[half] = m_new;
    }
  }
  const float inv[2] = {1.0f / l[0], 1.0f / l[1]};

  // Pass 2: P = exp(s − m)·(1/l) rounded to bf16 (the A operand), O += P·V.
  float o[D / 8][4];
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) o[nt][j] = 0.0f;
  const int mi = lane >> 3, ri = lane & 7;
  for (int t = 0; t < n_tiles; ++t) {
    const int k0 = t * kTileK;
    __syncthreads();
    load_tile<D>(kseq, kv_stride, kvh, k0, len, Ks);
    load_tile<D>(vseq, kv_stride, kvh, k0, len, Vs);
    __syncthreads();
    warp_scores<D>(qa, Ks, lane, s);
    uint32_t pa[4][4];  // A fragments of P for key steps of 16
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      float p[4];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int pos = half ? r_hi : r_lo;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int key = k0 + nt * 8 + t4 * 2 + j;
          const bool vis = key <= pos && key < len;
          p[half * 2 + j] = vis ? __fmul_rn(expf(s[nt][half * 2 + j] * scale - m[half]), inv[half]) : 0.0f;
        }
      }
      // Keys nt·8.. are columns 0-7 (nt even) or 8-15 (nt odd) of key step nt/2.
      pa[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16(p[0], p[1]);  // row g
      pa[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16(p[2], p[3]);  // row g + 8
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
      for (int nt = 0; nt < D / 8; nt += 2) {
        // Transposed matrices: (keys kk·16.., dims nt·8..), (keys +8, dims nt·8..), (keys kk·16.., dims +8),
        // (keys +8, dims +8): b0/b1 of dim groups nt and nt + 1.
        uint32_t b[4];
        ldmatrix_x4_trans(b, Vs + (kk * 16 + ri + (mi & 1) * 8) * (D + kPad) + nt * 8 + (mi >> 1) * 8);
        mma_bf16(o[nt], pa[kk], b[0], b[1]);
        mma_bf16(o[nt + 1], pa[kk], b[2], b[3]);
      }
    }
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? r_hi : r_lo;
    if (r >= len) continue;
    float* orow = out + (base + r) * q_stride + static_cast<int64_t>(h) * D;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt)
      *reinterpret_cast<float2*>(orow + nt * 8 + t4 * 2) =
          make_float2(maybe_round(o[nt][half * 2], rb), maybe_round(o[nt][half * 2 + 1], rb));
  }
}

template <int D>
cudaError_t launch_varlen(cudaStream_t s, const uint16_t* q, const uint16_t* k, const uint16_t* v, const int4* tiles,
                          int64_t n_tiles, int64_t n_heads, int64_t n_kv_heads, float* out, bool rb) {
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(n_heads));
  attention_varlen_kernel<D><<<grid, kWarps * 32, 0, s>>>(q, k, v, tiles, static_cast<int>(n_heads),
                                                          static_cast<int>(n_heads / n_kv_heads), scale, out, rb);
  return cudaGetLastError();
}

}  // namespace

cudaError_t attention_varlen_bf16(cudaStream_t s, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                  const int4* tiles, int64_t n_tiles, int64_t n_heads, int64_t n_kv_heads,
                                  int64_t head_dim, float* out, bool rb) {
  if (n_tiles == 0) return cudaSuccess;
  if (head_dim == 64) return launch_varlen<64>(s, q, k, v, tiles, n_tiles, n_heads, n_kv_heads, out, rb);
  return launch_varlen<128>(s, q, k, v, tiles, n_tiles, n_heads, n_kv_heads, out, rb);
}

}  // namespace angelslim::cuda::kernels
