// GPTQ solver for one linear; see include/angelslim/quant/gptq.h and SPEC 4.4.3-4.4.5.
// The working weight is kept transposed ([cols, rows]) so that a column update is a contiguous axpy.
#include "angelslim/quant/gptq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"
#include "angelslim/quant/fp8_weight.h"

// LAPACK (OpenBLAS) with 32-bit integers; the trailing size_t is gfortran's hidden length of the char argument.
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, std::size_t uplo_len);
void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda, int* info,
             std::size_t uplo_len, std::size_t diag_len);
}

namespace angelslim {

namespace {

// Rows per tile of the in-block column loop: 256 rows x 128 columns x 4 B = 128 KiB stays in L2.
constexpr int kRowTile = 256;
// Damping retries of SPEC 4.4.3 step 4 (each from the undamped H).
constexpr float kDampRetries[] = {0.02f, 0.04f, 0.08f, 0.16f};

// Builds U (upper, H_d^-1 = U^T U, H_d = Hp + lambda I, Hp = H permuted with dead diagonals set to 1).
// With J the exchange matrix: J H_d J = L L^T (Cholesky) gives H_d = V V^T with V = J L J upper, so
// H_d^-1 = V^-T V^-1 and U = V^-1 = J L^-1 J (upper, positive diagonal: the unique factor). One Cholesky and
// one triangular inverse instead of Cholesky, inverse and a second Cholesky. Returns false on failure.
bool inverse_cholesky_upper(std::span<const float> h, int k, std::span<const int32_t> perm,
                            const std::vector<char>& dead, double lambda, double* a, std::vector<float>& u) {
  // a: column-major, a(r, c) = H_d(K-1-r, K-1-c); only the lower triangle is referenced by dpotrf('L').
  // H is symmetric, so a(r, c) is read as h[perm[K-1-c], perm[K-1-r]]: one row of h per column of a.
  for (int c = 0; c < k; ++c) {
    const int pc = perm[k - 1 - c];
    const float* hrow = h.data() + static_cast<std::size_t>(pc) * k;
    double* acol = a + static_cast<std::size_t>(c) * k;
    for (int r = c; r < k; ++r) acol[r] = hrow[perm[k - 1 - r]];
    acol[c] = (dead[pc] ? 1.0 : acol[c]) + lambda;
  }
  int info = 0;
  const char lower = 'L';
  const char nonunit = 'N';
  dpotrf_(&lower, &k, a, &k, &info, 1);
  if (info != 0) return false;
  dtrtri_(&lower, &nonunit, &k, a, &k, &info, 1, 1);
  if (info != 0) return false;
  // U(i, j) = Linv(K-1-i, K-1-j) for j >= i; Linv(r, c) = a[c*K + r] with r >= c. Tiled transpose.
  constexpr int kT = 64;
  for (int c0 = 0; c0 < k; c0 += kT)
    for (int r0 = c0; r0 < k; r0 += kT)
      for (int c = c0; c < std::min(c0 + kT, k); ++c)
        for (int r = std::max(r0, c); r < std::min(r0 + kT, k); ++r)
          u[static_cast<std::size_t>(k - 1 - r) * k + (k - 1 - c)] =
              static_cast<float>(a[static_cast<std::size_t>(c) * k + r]);
  for (int i = 0; i < k; ++i) {
    const float d = u[static_cast<std::size_t>(i) * k + i];
    if (!(std::isfinite(d) && d > 0.0f)) return false;
  }
  return true;
}

// (1/2) sum_r d_r^T H d_r with d = W_hat - W (fallback loss), H: [k, k] with dead diagonals set to 1.
double quadratic_loss(std::span<const float> w, const std::vector<float>& w_hat, int rows, int k,
                      std::span<const float> h, const std::vector<char>& dead) {
  std::vector<float> d(w.size());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = w_hat[i] - w[i];
  std::vector<float> hd(h.begin(), h.end());
  for (int j = 0; j < k; ++j)
    if (dead[j]) hd[static_cast<std::size_t>(j) * k + j] = 1.0f;
  std::vector<float> dh(d.size());
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, k, k, 1.0f, d.data(), k, hd.data(), k, 0.0f, dh.data(),
              k);
  double s = 0.0;
  for (std::size_t i = 0; i < d.size(); ++i) s += static_cast<double>(d[i]) * dh[i];
  return s / 2.0;
}

}  // namespace

GptqResult gptq_quantize(std::span<const float> w, int rows, int cols, std::span<const float> h,
                         const GptqOptions& opt) {
  const std::string& name = opt.name.empty() ? std::string("linear") : opt.name;
  const bool fp8 = !opt.fp8_scales.empty();
  ANGELSLIM_CHECK(fp8 || (opt.bits >= 2 && opt.bits <= 8), InvalidInput, "{}: GPTQ bits must be in [2, 8], got {}",
                  name, opt.bits);
  ANGELSLIM_CHECK(!fp8 || opt.fp8_scales.size() == 1 || opt.fp8_scales.size() == static_cast<std::size_t>(rows),
                  InvalidInput, "{}: {} FP8 scales, expected 1 (per tensor) or {} (per channel)", name,
                  opt.fp8_scales.size(), rows);
  for (float sc : opt.fp8_scales)
    ANGELSLIM_CHECK(std::isfinite(sc) && sc > 0.0f, InvalidInput, "{}: FP8 scale {} must be finite and > 0", name, sc);
  ANGELSLIM_CHECK(rows >= 1 && cols >= 1 && w.size() == static_cast<std::size_t>(rows) * cols, InvalidInput,
                  "{}: weight has {} elements, expected [{}, {}]", name, w.size(), rows, cols);
  ANGELSLIM_CHECK(h.size() == static_cast<std::size_t>(cols) * cols, InvalidInput,
                  "{}: Hessian has {} elements, expected [{}, {}]", name, h.size(), cols, cols);
  ANGELSLIM_CHECK(opt.block_size >= 1, InvalidInput, "{}: GPTQ block size must be >= 1, got {}", name, opt.block_size);
  ANGELSLIM_CHECK(std::isfinite(opt.damp_percent) && opt.damp_percent >= 0.0f, InvalidInput,
                  "{}: damp_percent must be finite and >= 0, got {}", name, opt.damp_percent);
  for (std::size_t i = 0; i < w.size(); ++i)
    ANGELSLIM_CHECK(std::isfinite(w[i]), InvalidInput, "{}: weight element [{}, {}] is {} (expected finite)", name,
                    i / cols, i % cols, w[i]);
  for (std::size_t i = 0; i < h.size(); ++i)
    ANGELSLIM_CHECK(std::isfinite(h[i]), InvalidInput, "{}: Hessian element [{}, {}] is {} (expected finite)", name,
                    i / cols, i % cols, h[i]);

  const int k = cols;
  const int g = fp8 ? k : resolve_group_size(opt.group_size, k);
  const GridKind kind = opt.grid ? *opt.grid : opt.sym ? GridKind::kGptqSym : GridKind::kGptqAsym;
  const std::size_t kk = static_cast<std::size_t>(k) * k;

  GptqResult res;
  res.rows = rows;
  res.cols = cols;
  res.group_size = g;
  res.n_groups = k / g;

  // 1. Dead columns: H_jj = 0 -> 1 (W kept, so the column is rounded to nearest).
  std::vector<char> dead(k, 0);
  std::vector<double> diag(k);
  for (int j = 0; j < k; ++j) {
    const float hjj = h[static_cast<std::size_t>(j) * k + j];
    dead[j] = hjj == 0.0f;
    res.n_dead += dead[j];
    diag[j] = dead[j] ? 1.0 : hjj;
  }

  // 2. Order.
  res.perm.resize(k);
  std::iota(res.perm.begin(), res.perm.end(), 0);
  if (opt.order != GptqOrder::kNatural)
    std::stable_sort(res.perm.begin(), res.perm.end(), [&](int32_t a, int32_t b) { return diag[a] > diag[b]; });

  // 3-4. Damping and the inverse Cholesky factor, with the retry ladder.
  const double mean_diag = std::accumulate(diag.begin(), diag.end(), 0.0) / k;
  // FP64 factorisation workspace, left uninitialised: every element read is written first (128 MiB at K = 4096).
  auto a = std::make_unique_for_overwrite<double[]>(kk);
  std::vector<float> u(kk, 0.0f);
  std::vector<float> tries = {opt.damp_percent};
  for (float p : kDampRetries)
    if (p > opt.damp_percent) tries.push_back(p);
  bool factored = false;
  for (float p : tries) {
    if (inverse_cholesky_upper(h, k, res.perm, dead, static_cast<double>(p) * mean_diag, a.get(), u)) {
      res.damp = p;
      factored = true;
      break;
    }
  }
  a.reset();

  if (!factored) {
    // Every factorisation failed: RTN on the same grid, natural order (SPEC 4.4.3 step 4).
    std::iota(res.perm.begin(), res.perm.end(), 0);
    if (fp8) {
      Fp8Weight q = quantize_fp8_with_scales(w, rows, cols, opt.fp8_scales);
      res.w_hat = dequantize_fp8(q, rows, cols);
      res.codes = std::move(q.data);
      res.scales = std::move(q.scale);
    } else {
      QuantizedMatrix q = rtn_quantize(w, rows, cols, GridSpec{kind, opt.bits, g, opt.scale_dtype});
      res.codes = std::move(q.codes);
      res.scales = std::move(q.scales);
      res.zeros = std::move(q.zeros);
      res.w_hat = std::move(q.dequant);
    }
    res.g_idx.resize(k);
    for (int c = 0; c < k; ++c) res.g_idx[c] = c / g;
    res.fallback = true;
    res.fallback_reason = "cholesky";
    res.damp = 0.0f;
    res.loss = quadratic_loss(w, res.w_hat, rows, k, h, dead);
  } else {
    const std::vector<int32_t>& perm = res.perm;
    const bool static_groups = opt.order == GptqOrder::kActOrderStatic;
    res.codes.resize(w.size());
    res.w_hat.resize(w.size());
    if (fp8) {
      res.scales = opt.fp8_scales;
    } else {
      res.scales.resize(static_cast<std::size_t>(rows) * res.n_groups);
      res.zeros.resize(res.scales.size());
    }

    // 5. Static groups: parameters from the original W per original group.
    if (static_groups && !fp8) {
      for (int r = 0; r < rows; ++r)
        for (int gi = 0; gi < res.n_groups; ++gi) {
          const GroupParams p =
              compute_group_params(w.subspan(static_cast<std::size_t>(r) * cols + static_cast<std::size_t>(gi) * g, g),
                                   kind, opt.bits, opt.scale_dtype);
          res.scales[static_cast<std::size_t>(r) * res.n_groups + gi] = p.scale;
          res.zeros[static_cast<std::size_t>(r) * res.n_groups + gi] = p.zero;
        }
    }

    // Working copy, transposed and permuted: wt[i, r] = W[r, perm[i]].
    std::vector<float> wt(w.size());
    constexpr int kT = 32;  // tiled transpose
    for (int r0 = 0; r0 < rows; r0 += kT)
      for (int i0 = 0; i0 < k; i0 += kT)
        for (int i = i0; i < std::min(i0 + kT, k); ++i)
          for (int r = r0; r < std::min(r0 + kT, rows); ++r)
            wt[static_cast<std::size_t>(i) * rows + r] = w[static_cast<std::size_t>(r) * cols + perm[i]];

    const int bsz = opt.block_size;
    std::vector<float> err(static_cast<std::size_t>(bsz) * rows);  // E1 transposed: [block col, row]
    std::vector<float> w1(static_cast<std::size_t>(bsz) * kRowTile);
    std::vector<uint8_t> codes_t(w.size());  // [k, rows] codes by position
    std::vector<float> lo(kRowTile), hi(kRowTile);
    double loss = 0.0;
    for (int i1 = 0; i1 < k;) {
      int i2 = std::min(i1 + bsz, k);
      if (!static_groups) {
        // End the block before a group that starts inside it and would spill past its end: group parameters
        // must see fully updated weights, which holds inside the block (W1) and at a block start (all lazy
        // updates applied); equals the usual split when g divides B or B divides g.
        for (int c = (i1 / g + 1) * g; c < i2; c += g)
          if (c + g > i2) {
            i2 = c;
            break;
          }
      }
      for (int r0 = 0; r0 < rows; r0 += kRowTile) {
        const int r1 = std::min(r0 + kRowTile, rows);
        const int nr = r1 - r0;
        // W1: this tile of the block, contiguous ([block col, tile row]); wt's row stride is a power of two
        // for real layers, which made the in-block updates thrash the caches.
        for (int i = i1; i < i2; ++i)
          std::copy_n(wt.data() + static_cast<std::size_t>(i) * rows + r0, nr,
                      w1.data() + static_cast<std::size_t>(i - i1) * nr);
        for (int i = i1; i < i2; ++i) {
          float* col = w1.data() + static_cast<std::size_t>(i - i1) * nr;
          const int gi = static_groups ? perm[i] / g : i / g;
          if (!static_groups && !fp8 && i % g == 0) {
            // Dynamic group: min/max per row of the current columns i .. i+g (in W1 inside the block; beyond
            // it only at a block start, where wt is fully updated).
            for (int r = 0; r < nr; ++r) lo[r] = hi[r] = col[r];
            for (int j = i + 1; j < i + g; ++j) {
              const float* cj = j < i2 ? w1.data() + static_cast<std::size_t>(j - i1) * nr
                                       : wt.data() + static_cast<std::size_t>(j) * rows + r0;
              for (int r = 0; r < nr; ++r) {
                lo[r] = std::min(lo[r], cj[r]);
                hi[r] = std::max(hi[r], cj[r]);
              }
            }
            for (int r = 0; r < nr; ++r) {
              const GroupParams p = group_params_from_range(lo[r], hi[r], kind, opt.bits, opt.scale_dtype);
              res.scales[static_cast<std::size_t>(r0 + r) * res.n_groups + gi] = p.scale;
              res.zeros[static_cast<std::size_t>(r0 + r) * res.n_groups + gi] = p.zero;
            }
          }
          const float d = u[static_cast<std::size_t>(i) * k + i];
          float* e = err.data() + static_cast<std::size_t>(i - i1) * rows + r0;
          float* out_col = wt.data() + static_cast<std::size_t>(i) * rows + r0;  // column i is done: reuse
          uint8_t* code_col = codes_t.data() + static_cast<std::size_t>(i) * rows + r0;
          double col_loss = 0.0;
          for (int r = 0; r < nr; ++r) {
            const float x = col[r];
            uint8_t q;
            float dq;
            if (fp8) {
              // The FP8 writer's rounding (quantize_fp8_with_scales / dequantize_fp8), column by column.
              const float sc = res.scales.size() == 1 ? res.scales[0] : res.scales[static_cast<std::size_t>(r0 + r)];
              q = f32_to_fp8e4m3(x / sc);
              dq = fp8e4m3_to_f32(q) * sc;
            } else {
              const std::size_t pi = static_cast<std::size_t>(r0 + r) * res.n_groups + gi;
              const GroupParams p{res.scales[pi], res.zeros[pi]};
              const int qi = quantize_code(x, p, opt.bits);
              q = static_cast<uint8_t>(qi);
              dq = dequantize_code(qi, p);
            }
            code_col[r] = q;
            out_col[r] = dq;
            const float diff = x - dq;
            e[r] = diff / d;
            col_loss += static_cast<double>(diff) * diff;
          }
          loss += col_loss / (static_cast<double>(d) * d) / 2.0;
          // In-block update: W1[j, r] -= U[i, j] * e[r] for j in (i, i2).
          const float* urow = u.data() + static_cast<std::size_t>(i) * k;
          // (a rank-1 update; BLAS because g++ -O2 left the plain loop scalar, 30% of the solver's time)
          if (i + 1 < i2)
            cblas_sger(CblasRowMajor, i2 - i - 1, nr, -1.0f, urow + i + 1, 1, e, 1,
                       w1.data() + static_cast<std::size_t>(i + 1 - i1) * nr, nr);
        }
      }
      // Lazy block update: wt[i2:, :] -= U[i1:i2, i2:]^T * E1.
      if (i2 < k)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k - i2, rows, i2 - i1, -1.0f,
                    u.data() + static_cast<std::size_t>(i1) * k + i2, k, err.data(), rows, 1.0f,
                    wt.data() + static_cast<std::size_t>(i2) * rows, rows);
      i1 = i2;
    }
    res.loss = loss;
    // wt now holds W_hat^T by position: scatter codes and W_hat to [rows, cols] in tiles.
    const bool fold = opt.order == GptqOrder::kFold;
    for (int i0 = 0; i0 < k; i0 += kT)
      for (int q0 = 0; q0 < rows; q0 += kT)
        for (int i = i0; i < std::min(i0 + kT, k); ++i) {
          const int store_col = fold ? i : perm[i];
          for (int r = q0; r < std::min(q0 + kT, rows); ++r) {
            res.codes[static_cast<std::size_t>(r) * cols + store_col] = codes_t[static_cast<std::size_t>(i) * rows + r];
            res.w_hat[static_cast<std::size_t>(r) * cols + perm[i]] = wt[static_cast<std::size_t>(i) * rows + r];
          }
        }

    res.g_idx.resize(k);
    for (int i = 0; i < k; ++i) {
      switch (opt.order) {
        case GptqOrder::kNatural:
        case GptqOrder::kActOrderStatic:
        case GptqOrder::kFold:
          res.g_idx[i] = i / g;
          break;
        case GptqOrder::kDescAct:
          res.g_idx[perm[i]] = i / g;
          break;
      }
    }
  }

  double e2 = 0.0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double d = static_cast<double>(w[i]) - res.w_hat[i];
    e2 += d * d;
  }
  res.err_fro = std::sqrt(e2);
  return res;
}

}  // namespace angelslim
