// GPTQ solver for one linear layer (SPEC 4.4.3-4.4.5): OBS column updates with a lazily applied block update,
// after Frantar et al., "GPTQ" (arXiv:2210.17323) Algorithm 1, with act-order, static groups and the fold mode.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "angelslim/core/device_matrix.h"
#include "angelslim/quant/grid.h"

namespace angelslim {

// Column order and grouping (SPEC 4.4.5). pi = stable argsort of diag(H) descending (ties: lower index first).
enum class GptqOrder {
  kNatural,         // natural order, dynamic groups; g_idx[k] = k / g
  kActOrderStatic,  // pi order, groups c / g of the original columns with (S, Z) from the original W
  kFold,            // pi order, dynamic groups on permuted positions; codes stay in pi order (caller permutes)
  kDescAct,         // pi order, dynamic groups on permuted positions; codes in original order, g_idx[pi_i] = i / g
};

struct GptqOptions {
  int bits = 4;          // 2..8 (checkpoints use 4 or 8)
  int group_size = 128;  // -1 = per channel
  bool sym = true;       // GPTQ-sym grid; false: GPTQ-asym (SPEC 4.2)
  GptqOrder order = GptqOrder::kActOrderStatic;
  float damp_percent = 0.01f;  // p: lambda = p * mean(diag H)
  int block_size = 128;        // B of the lazy block update
  ScaleDType scale_dtype = ScaleDType::kBF16;
  std::string name;  // linear name for error messages
  // Set: this grid instead of the GPTQ-sym/asym one `sym` picks (AWQ's grids, for AWQ with GPTQ rounding).
  std::optional<GridKind> grid;
  // Non-empty: FP8 E4M3 rounding with these fixed scales (1 = per tensor, rows = per channel) instead of an
  // integer grid; bits, group_size, sym and scale_dtype are not read, codes are e4m3 bytes of W / scale.
  std::vector<float> fp8_scales;
  // A device solver may leave W_hat on its device (GptqResult::w_hat_device, w_hat empty); the CPU one ignores it.
  bool w_hat_on_device = false;
};

struct GptqResult {
  int rows = 0;
  int cols = 0;
  int group_size = 0;  // resolved (per channel: cols)
  int n_groups = 0;
  std::vector<uint8_t> codes;   // [rows, cols] u8. Original column order, except kFold: column i holds
                                // original column perm[i]. FP8 mode: e4m3 bytes
  std::vector<float> scales;    // [rows, n_groups] f32 (bf16-representable by default), indexed by g_idx;
                                // FP8 mode: options.fp8_scales
  std::vector<int32_t> zeros;   // [rows, n_groups] i32; FP8 mode: empty
  std::vector<int32_t> g_idx;   // [cols] i32: group of stored column c (same order as codes)
  std::vector<int32_t> perm;    // [cols] i32: position i quantized original column perm[i] (identity when
                                // natural or after the RTN fallback)
  std::vector<float> w_hat;     // [rows, cols] f32 dequantized weight, ALWAYS original column order
  double loss = 0.0;            // sum over rows, columns of (w - q)^2 / d^2 / 2 (SPEC 4.4.3 step 6); on
                                // fallback: (1/2) sum_r d_r^T H d_r with d = W_hat - W and the undamped H
  double err_fro = 0.0;         // ||W - W_hat||_F
  float damp = 0.0f;            // p that factorised; 0 after the RTN fallback
  bool fallback = false;        // true: every Cholesky failed, quantized with RTN on the same grid
  std::string fallback_reason;  // "cholesky" when fallback
  int n_dead = 0;               // columns with H_jj = 0
  double out_err = -1.0;        // sqrt(tr(D H D^T) / tr(W H W^T)), D = W_hat - W, when the solver computed it
                                // (the GPU one does); < 0: not computed
  // Set (GptqOptions::w_hat_on_device, a device solver): W_hat [rows, cols] on the device instead of in w_hat.
  std::shared_ptr<const DeviceMatrix> w_hat_device;
};

// Quantizes W with the GPTQ solver.
// w: [rows, cols] f32 row-major, PyTorch [out, in] layout, finite.
// h: [cols, cols] f32 row-major, symmetric (only one triangle is read), H = (2/N) X^T X, finite (InvalidInput
//    naming options.name otherwise).
// Cholesky and the triangular inverse run in FP64 (LAPACK dpotrf/dtrtri: FP32 factorisation of ill-conditioned
// K = 4096 Hessians is where GPTQ implementations fail), the column loop and the block GEMM in FP32.
// Dynamic groups take (S, Z) from the fully updated weights W[:, c .. c+g) when column c is reached (the exact
// unblocked algorithm; AutoGPTQ instead reads columns of the current block without its in-block updates, which
// differs when g < block size). Memory besides the inputs: 12 K^2 bytes while factorising, then 4 K^2 + 10 rows*K.
GptqResult gptq_quantize(std::span<const float> w, int rows, int cols, std::span<const float> h,
                         const GptqOptions& options);

// out[i, :] = x[perm[i], :]. x: [rows, cols] row-major; perm: [rows] (for the fold mode: permute the rows of
// the MLP's gate/up codes, scales and zeros by the down projection's perm).
template <class T>
std::vector<T> gather_rows(std::span<const T> x, int rows, int cols, std::span<const int32_t> perm) {
  std::vector<T> out(x.size());
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c)
      out[static_cast<std::size_t>(i) * cols + c] = x[static_cast<std::size_t>(perm[i]) * cols + c];
  return out;
}

// out[:, i] = x[:, perm[i]]. x: [rows, cols] row-major; perm: [cols].
template <class T>
std::vector<T> gather_columns(std::span<const T> x, int rows, int cols, std::span<const int32_t> perm) {
  std::vector<T> out(x.size());
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < cols; ++i)
      out[static_cast<std::size_t>(r) * cols + i] = x[static_cast<std::size_t>(r) * cols + perm[i]];
  return out;
}

}  // namespace angelslim
