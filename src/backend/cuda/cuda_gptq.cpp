// GPU GPTQ solver; see include/angelslim/backend/cuda_gptq.h. Step numbers follow src/quant/gptq.cpp, whose host
// parts (checks, dead columns, order, damping ladder, static groups, g_idx) are repeated here unchanged.
#include "angelslim/backend/cuda_gptq.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <numeric>

#include "angelslim/backend/cuda_calib.h"
#include "angelslim/core/error.h"
#include "angelslim/core/parallel.h"
#include "angelslim/quant/gptq_quantizer.h"
#include "backend/cuda/kernels.h"

#define ANGELSLIM_CUSOLVER_CHECK(call)                                                                        \
  do {                                                                                                        \
    const cusolverStatus_t angelslim_s_ = (call);                                                             \
    if (angelslim_s_ != CUSOLVER_STATUS_SUCCESS)                                                              \
      ::angelslim::cuda::throw_cuda_error(#call, ("cusolver status " + std::to_string(angelslim_s_)).c_str(), \
                                          __FILE__, __LINE__);                                                \
  } while (0)

namespace angelslim {

GptqSolver cuda_gptq_solver(CalibBackend& calib, int concurrency) {
  auto* gpu = dynamic_cast<cuda::CudaCalibActivations*>(&calib);
  ANGELSLIM_CHECK(gpu != nullptr, Unsupported, "the GPU GPTQ solver needs the cuda calibration backend, not {}",
                  calib.device_name());
  if (concurrency <= 1) {
    // One solve at a time on the backend's own stream.
    auto ws = std::make_shared<cuda::GptqCudaWorkspace>(gpu->context());
    return [ws](std::span<const float> w, int rows, int cols, const Hessian& h, const GptqOptions& o) {
      return ws->quantize(w, rows, cols, h, o);
    };
  }
  // Several solves at once: a pool of workspaces, each with its own stream, cuBLAS and cuSOLVER handles, so that one
  // solve's host work and transfers overlap another's kernels. A caller thread takes a free workspace for one call.
  struct Pool {
    int device = 0;
    std::vector<std::unique_ptr<cuda::CudaContext>> contexts;
    std::vector<std::unique_ptr<cuda::GptqCudaWorkspace>> workspaces;
    std::vector<int> free;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto pool = std::make_shared<Pool>();
  pool->device = gpu->context().device();
  for (int i = 0; i < concurrency; ++i) {
    pool->contexts.push_back(std::make_unique<cuda::CudaContext>(pool->device));
    pool->workspaces.push_back(std::make_unique<cuda::GptqCudaWorkspace>(*pool->contexts.back()));
    pool->free.push_back(i);
  }
  return [pool](std::span<const float> w, int rows, int cols, const Hessian& h, const GptqOptions& o) {
    int slot = -1;
    {
      std::unique_lock<std::mutex> lock(pool->mu);
      pool->cv.wait(lock, [&] { return !pool->free.empty(); });
      slot = pool->free.back();
      pool->free.pop_back();
    }
    struct Release {
      Pool& p;
      int slot;
      ~Release() {
        {
          std::lock_guard<std::mutex> lock(p.mu);
          p.free.push_back(slot);
        }
        p.cv.notify_one();
      }
    } release{*pool, slot};
    ANGELSLIM_CUDA_CHECK(cudaSetDevice(pool->device));  // the calling thread may be a fresh worker
    return pool->workspaces[static_cast<std::size_t>(slot)]->quantize(w, rows, cols, h, o);
  };
}

namespace cuda {

namespace {

constexpr float kDampRetries[] = {0.02f, 0.04f, 0.08f, 0.16f};  // as src/quant/gptq.cpp

template <class T>
T* grow(DeviceBuffer<T>& b, std::size_t n) {
  b.ensure(std::max<std::size_t>(n, 1));
  return b.data();
}

}  // namespace

GptqCudaWorkspace::GptqCudaWorkspace(CudaContext& ctx) : ctx_(ctx) {
  ANGELSLIM_CUSOLVER_CHECK(cusolver().create(&solver_));
  ANGELSLIM_CUSOLVER_CHECK(cusolver().set_stream(solver_, ctx.stream()));
}

GptqCudaWorkspace::~GptqCudaWorkspace() {
  if (solver_) (void)cusolver().destroy(solver_);
}

GptqResult GptqCudaWorkspace::quantize(std::span<const float> w, int rows, int cols, std::span<const float> h,
                                       const GptqOptions& opt) {
  return quantize(w, rows, cols, Hessian(cols, 1, std::vector<float>(h.begin(), h.end())), opt);
}

GptqResult GptqCudaWorkspace::quantize(std::span<const float> w, int rows, int cols, const Hessian& hess,
                                       const GptqOptions& opt) {
  // The device kernels implement the GPTQ grids only; another grid (AWQ's) takes the CPU solver, checks included.
  if (opt.grid && *opt.grid != GridKind::kGptqSym && *opt.grid != GridKind::kGptqAsym)
    return gptq_quantize(w, rows, cols, hess.host(), opt);
  const std::string& name = opt.name.empty() ? std::string("linear") : opt.name;
  ANGELSLIM_CHECK(opt.bits >= 2 && opt.bits <= 8, InvalidInput, "{}: GPTQ bits must be in [2, 8], got {}", name,
                  opt.bits);
  ANGELSLIM_CHECK(rows >= 1 && cols >= 1 && w.size() == static_cast<std::size_t>(rows) * cols, InvalidInput,
                  "{}: weight has {} elements, expected [{}, {}]", name, w.size(), rows, cols);
  // A Hessian the calibration pass left on this device is read in place; any other one is checked and uploaded.
  const auto* on_device = dynamic_cast<const CudaDeviceMatrix*>(hess.device());
  if (on_device && on_device->device() != ctx_.device()) on_device = nullptr;
  const std::size_t h_size =
      on_device ? static_cast<std::size_t>(on_device->rows() * on_device->cols()) : hess.host().size();
  ANGELSLIM_CHECK(h_size == static_cast<std::size_t>(cols) * cols, InvalidInput,
                  "{}: Hessian has {} elements, expected [{}, {}]", name, h_size, cols, cols);
  ANGELSLIM_CHECK(opt.block_size >= 1, InvalidInput, "{}: GPTQ block size must be >= 1, got {}", name, opt.block_size);
  ANGELSLIM_CHECK(std::isfinite(opt.damp_percent) && opt.damp_percent >= 0.0f, InvalidInput,
                  "{}: damp_percent must be finite and >= 0, got {}", name, opt.damp_percent);
  // Host loops run on a few threads (row ranges); the messages name the first offending element as on the CPU.
  parallel_for(rows, [&](int64_t r) {
    for (int c = 0; c < cols; ++c) {
      const float v = w[static_cast<std::size_t>(r) * cols + c];
      ANGELSLIM_CHECK(std::isfinite(v), InvalidInput, "{}: weight element [{}, {}] is {} (expected finite)", name, r, c,
                      v);
    }
  });
  auto check_host_hessian = [&](std::span<const float> h) {
    parallel_for(cols, [&](int64_t r) {
      for (int c = 0; c < cols; ++c) {
        const float v = h[static_cast<std::size_t>(r) * cols + c];
        ANGELSLIM_CHECK(std::isfinite(v), InvalidInput, "{}: Hessian element [{}, {}] is {} (expected finite)", name,
                        r, c, v);
      }
    });
  };
  if (!on_device) check_host_hessian(hess.host());
  // ANGELSLIM_GPTQ_PROFILE=1: one log line per solve with the wall time of its phases (synchronising between them).
  static const bool profile = [] {
    const char* e = std::getenv("ANGELSLIM_GPTQ_PROFILE");
    return e && *e && std::string(e) != "0";
  }();
  using Clock = std::chrono::steady_clock;
  Clock::time_point marks[6];
  int n_marks = 0;
  auto mark = [&] {
    if (!profile) return;
    ctx_.synchronize();
    marks[n_marks++] = Clock::now();
  };
  mark();
  const int k = cols;
  const int g = resolve_group_size(opt.group_size, k);
  const std::size_t kk = static_cast<std::size_t>(k) * k, rk = static_cast<std::size_t>(rows) * k;
  cudaStream_t s = ctx_.stream();
  const int sm = ctx_.sm_count();

  GptqResult res;
  res.rows = rows;
  res.cols = cols;
  res.group_size = g;
  res.n_groups = k / g;

  // H on the device: scaled in place from the pass's Gram matrix (checked there; the host names a bad element), or
  // uploaded; its diagonal on the host.
  float* dh = grow(h_, kk);
  int* dinfo = grow(info_, 3);
  std::vector<float> h_diag(static_cast<std::size_t>(k));
  if (on_device) {
    ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(dinfo, 0, sizeof(int), s));
    ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::gptq_scale_hessian(s, sm, on_device->data(), static_cast<int64_t>(kk),
                                                            hess.scale(), dh, dinfo),
                                "scale_hessian_kernel");
    int bad = 0;
    download(ctx_, dinfo, 1, &bad);
    if (bad) check_host_hessian(hess.host());  // throws with the element's position
    const std::size_t diag_pitch = (static_cast<std::size_t>(k) + 1) * sizeof(float);  // H[j, j], j = 0..k-1
    ANGELSLIM_CUDA_CHECK(cudaMemcpy2DAsync(h_diag.data(), sizeof(float), dh, diag_pitch, sizeof(float),
                                           static_cast<std::size_t>(k), cudaMemcpyDeviceToHost, s));
    ctx_.synchronize();
  } else {
    const std::span<const float> h = hess.host();
    upload(ctx_, h.data(), kk, dh);
    for (int j = 0; j < k; ++j) h_diag[static_cast<std::size_t>(j)] = h[static_cast<std::size_t>(j) * k + j];
  }
  // 1. Dead columns.
  std::vector<uint8_t> dead(static_cast<std::size_t>(k), 0);
  std::vector<double> diag(static_cast<std::size_t>(k));
  for (int j = 0; j < k; ++j) {
    const float hjj = h_diag[static_cast<std::size_t>(j)];
    dead[static_cast<std::size_t>(j)] = hjj == 0.0f;
    res.n_dead += dead[static_cast<std::size_t>(j)];
    diag[static_cast<std::size_t>(j)] = dead[static_cast<std::size_t>(j)] ? 1.0 : hjj;
  }
  // 2. Order.
  res.perm.resize(static_cast<std::size_t>(k));
  std::iota(res.perm.begin(), res.perm.end(), 0);
  if (opt.order != GptqOrder::kNatural)
    std::stable_sort(res.perm.begin(), res.perm.end(), [&](int32_t a, int32_t b) { return diag[a] > diag[b]; });
  const std::vector<int32_t>& perm = res.perm;

  mark();  // host checks, order
  // 3-4. Damping ladder: FP64 Cholesky of J·H_d·J and its triangular inverse (cuSOLVER), U = J·L⁻¹·J in FP32.
  int32_t* dperm = grow(perm_, static_cast<std::size_t>(k));
  upload(ctx_, perm.data(), perm.size(), dperm);
  uint8_t* ddead = grow(dead_, static_cast<std::size_t>(k));
  upload(ctx_, dead.data(), dead.size(), ddead);
  double* da = grow(a_, kk);
  float* du = grow(u_, kk);
  int lwork = 0;
  ANGELSLIM_CUSOLVER_CHECK(cusolver().dpotrf_buffer_size(solver_, CUBLAS_FILL_MODE_LOWER, k, da, k, &lwork));
  double* dwork = grow(potrf_work_, static_cast<std::size_t>(std::max(lwork, 1)));
  std::size_t trtri_dev = 0, trtri_host = 0;
  ANGELSLIM_CUSOLVER_CHECK(cusolver().xtrtri_buffer_size(solver_, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, k,
                                                         CUDA_R_64F, da, k, &trtri_dev, &trtri_host));
  unsigned char* dtw = grow(trtri_work_, trtri_dev);
  trtri_host_.resize(std::max<std::size_t>(trtri_host, 1));
  const double mean_diag = std::accumulate(diag.begin(), diag.end(), 0.0) / k;
  std::vector<float> tries = {opt.damp_percent};
  for (float p : kDampRetries)
    if (p > opt.damp_percent) tries.push_back(p);
  bool factored = false;
  for (float p : tries) {
    ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(dinfo, 0, 3 * sizeof(int), s));
    ANGELSLIM_CUDA_CHECK_LAUNCH(
        kernels::gptq_factor_input(s, sm, dh, k, dperm, ddead, static_cast<double>(p) * mean_diag, da),
        "gptq_factor_input_kernel");
    ANGELSLIM_CUSOLVER_CHECK(cusolver().dpotrf(solver_, CUBLAS_FILL_MODE_LOWER, k, da, k, dwork, lwork, dinfo));
    int info[3] = {0, 0, 0};
    download(ctx_, dinfo, 1, info);
    if (info[0] != 0) continue;
    ANGELSLIM_CUSOLVER_CHECK(cusolver().xtrtri(solver_, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, k, CUDA_R_64F, da,
                                               k, dtw, trtri_dev, trtri_host_.data(), trtri_host, dinfo + 1));
    ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::gptq_extract_u(s, sm, da, k, du, dinfo + 2), "gptq_extract_u_kernel");
    download(ctx_, dinfo, 3, info);
    if (info[1] != 0 || info[2] != 0) continue;
    res.damp = p;
    factored = true;
    break;
  }
  if (!factored) {
    // Every factorisation failed: the CPU solver (its own ladder, then RTN on the same grid, SPEC 4.4.3 step 4).
    GptqResult cpu = gptq_quantize(w, rows, cols, hess.host(), opt);
    return cpu;
  }

  mark();  // H upload, factorisation
  const bool static_groups = opt.order == GptqOrder::kActOrderStatic;
  const GridKind kind = opt.grid ? *opt.grid : opt.sym ? GridKind::kGptqSym : GridKind::kGptqAsym;
  const std::size_t n_par = static_cast<std::size_t>(rows) * res.n_groups;
  res.scales.resize(n_par);
  res.zeros.resize(n_par);
  // 5. Static groups: parameters from the original W per original group (host, as on the CPU).
  if (static_groups) {
    parallel_for(rows, [&](int64_t r) {
      for (int gi = 0; gi < res.n_groups; ++gi) {
        const GroupParams p =
            compute_group_params(w.subspan(static_cast<std::size_t>(r) * cols + static_cast<std::size_t>(gi) * g,
                                           static_cast<std::size_t>(g)),
                                 kind, opt.bits, opt.scale_dtype);
        res.scales[static_cast<std::size_t>(r) * res.n_groups + gi] = p.scale;
        res.zeros[static_cast<std::size_t>(r) * res.n_groups + gi] = p.zero;
      }
    });
  }
  float* dscales = grow(scales_, n_par);
  int32_t* dzeros = grow(zeros_, n_par);
  if (static_groups) {
    upload(ctx_, res.scales.data(), n_par, dscales);
    upload(ctx_, res.zeros.data(), n_par, dzeros);
  }
  // Working copy wt[i, r] = W[r, perm[i]].
  float* dw = grow(w_, rk);
  upload(ctx_, w.data(), rk, dw);
  float* dwt = grow(wt_, rk);
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::gptq_permute_transpose(s, dw, rows, k, dperm, dwt), "permute_transpose_kernel");
  const int bsz = opt.block_size;
  float* derr = grow(err_, static_cast<std::size_t>(bsz) * rows);
  uint8_t* dcodes_t = grow(codes_t_, rk);
  double* dloss = grow(loss_, 1);
  ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(dloss, 0, sizeof(double), s));
  ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(dinfo, 0, sizeof(int), s));
  const int scale_dtype = opt.scale_dtype == ScaleDType::kBF16 ? 0 : opt.scale_dtype == ScaleDType::kF16 ? 1 : 2;
  const float minus_one = -1.0f, one = 1.0f;
  for (int i1 = 0; i1 < k;) {
    int i2 = std::min(i1 + bsz, k);
    if (!static_groups) {
      // The CPU's block split: a group starting inside the block must not spill past its end.
      for (int c = (i1 / g + 1) * g; c < i2; c += g)
        if (c + g > i2) {
          i2 = c;
          break;
        }
    }
    ANGELSLIM_CUDA_CHECK_LAUNCH(
        kernels::gptq_column_block(s, dwt, rows, k, du, i1, i2, g, static_groups, dperm, dscales, dzeros, res.n_groups,
                                   opt.bits, kind == GridKind::kGptqSym ? 0 : 1, scale_dtype, derr, dcodes_t, dloss,
                                   dinfo),
        "gptq_column_block_kernel");
    // Lazy block update: wt[i2:, :] -= U[i1:i2, i2:]ᵀ · E1 (row-major), i.e. column-major C(rows × k-i2) -= E1 · U'.
    if (i2 < k)
      ANGELSLIM_CUBLAS_CHECK(cublas().sgemm(ctx_.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, rows, k - i2, i2 - i1, &minus_one,
                                            derr, rows, du + static_cast<std::size_t>(i1) * k + i2, k, &one,
                                            dwt + static_cast<std::size_t>(i2) * rows, rows));
    i1 = i2;
  }
  mark();  // W upload, column loop
  // Scatter codes and W_hat back to [rows, cols].
  const bool fold = opt.order == GptqOrder::kFold;
  uint8_t* dcodes = grow(codes_, rk);
  float* dwhat = grow(w_hat_, rk);
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::gptq_scatter(s, sm, dcodes_t, dwt, rows, k, dperm, fold, dcodes, dwhat),
                              "gptq_scatter_kernel");
  if (opt.w_hat_on_device) {  // a copy of its own (the workspace is reused); complete after the downloads below
    DeviceBuffer<float> kept = spare_->take(rk);
    ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(kept.data(), dwhat, rk * sizeof(float), cudaMemcpyDeviceToDevice, s));
    res.w_hat_device = std::make_shared<CudaDeviceMatrix>(
        ctx_.device(), rows, k, std::move(kept), [spare = spare_](DeviceBuffer<float>&& b) {
          std::lock_guard<std::mutex> lock(spare->mu);
          spare->free.push_back(std::move(b));
        });
  }
  // Output-error traces: tr(M H Mᵀ) for M = W_hat - W and M = W (column-major: (H·Mᵀ) over the K×rows view).
  float* dd = grow(tmp_, rk);
  float* dmh = grow(tmp2_, rk);
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::sub_f32(s, sm, dwhat, dw, dd, static_cast<int64_t>(rk)), "sub_kernel");
  double* dquad = grow(a_, kk);  // the factorisation buffer is free now: three FP64 accumulators
  ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(dquad, 0, 3 * sizeof(double), s));
  // ||W - W_hat||² (err_fro) from the same difference.
  ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::dot_f64(s, sm, dd, dd, static_cast<int64_t>(rk), dquad + 2), "dot_f64_kernel");
  const float zero = 0.0f;
  for (int which = 0; which < 2; ++which) {
    const float* m = which == 0 ? dd : dw;
    ANGELSLIM_CUBLAS_CHECK(
        cublas().sgemm(ctx_.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, k, rows, k, &one, dh, k, m, k, &zero, dmh, k));
    ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::dot_f64(s, sm, m, dmh, static_cast<int64_t>(rk), dquad + which),
                                "dot_f64_kernel");
  }
  mark();  // scatter, error traces
  res.codes.resize(rk);
  download(ctx_, dcodes, rk, res.codes.data());
  if (!static_groups) {
    download(ctx_, dscales, n_par, res.scales.data());
    download(ctx_, dzeros, n_par, res.zeros.data());
  }
  double quad[3] = {0.0, 0.0, 0.0}, loss = 0.0;
  download(ctx_, dquad, 3, quad);
  download(ctx_, dloss, 1, &loss);
  int flag = 0;
  download(ctx_, dinfo, 1, &flag);
  ANGELSLIM_CHECK(flag == 0, InvalidInput,
                  "{}: a GPTQ group scale is not finite and positive after rounding to the scale dtype", name);
  res.loss = loss;
  res.out_err = quad[1] > 0 ? std::sqrt(std::max(0.0, quad[0]) / quad[1]) : 0.0;

  res.g_idx.resize(static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) {
    switch (opt.order) {
      case GptqOrder::kNatural:
      case GptqOrder::kActOrderStatic:
      case GptqOrder::kFold:
        res.g_idx[static_cast<std::size_t>(i)] = i / g;
        break;
      case GptqOrder::kDescAct:
        res.g_idx[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])] = i / g;
        break;
    }
  }
  res.err_fro = std::sqrt(quad[2]);
  // W_hat from the codes on the host (the column loop's dequantization, (q - z) · s in FP32, is exact to repeat):
  // a quarter of the bytes of downloading it. Not at all when it stays on the device.
  if (!res.w_hat_device) {
    res.w_hat.resize(rk);
    parallel_for(rows, [&](int64_t r) {
      const std::size_t row = static_cast<std::size_t>(r) * k, prow = static_cast<std::size_t>(r) * res.n_groups;
      for (int j = 0; j < k; ++j) {
        const std::size_t pi = prow + static_cast<std::size_t>(res.g_idx[static_cast<std::size_t>(j)]);
        const int c = fold ? perm[static_cast<std::size_t>(j)] : j;
        res.w_hat[row + static_cast<std::size_t>(c)] =
            static_cast<float>(static_cast<int>(res.codes[row + static_cast<std::size_t>(j)]) - res.zeros[pi]) *
            res.scales[pi];
      }
    });
  }
  mark();  // downloads
  if (profile) {
    auto ms = [&](int i) { return std::chrono::duration<double, std::milli>(marks[i + 1] - marks[i]).count(); };
    spdlog::info(
        "gptq-profile {} [{} x {}]: checks and H {:.1f} ms, factor {:.1f} ms, loop {:.1f} ms, traces {:.1f} ms, "
        "downloads {:.1f} ms",
        name, rows, cols, ms(0), ms(1), ms(2), ms(3), ms(4));
  }
  return res;
}

}  // namespace cuda
}  // namespace angelslim
