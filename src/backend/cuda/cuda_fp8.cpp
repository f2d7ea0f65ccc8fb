// FP8 weight quantization on the GPU; see src/backend/cuda/fp8_weights.h. Per layer: one abs-max kernel per linear
// (per row), the scales on the host with fp8_scale_from_amax itself, then per linear one kernel writing the e4m3
// codes and the FP64 error sums, whose codes are downloaded through two pinned buffers while host threads copy the
// previous linear's codes into its output vector.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>

#include "angelslim/backend/cuda_calib.h"
#include "angelslim/core/error.h"
#include "angelslim/core/parallel.h"
#include "backend/cuda/fp8_kernels.h"
#include "backend/cuda/fp8_weights.h"

namespace angelslim::cuda {

namespace {

using Clock = std::chrono::steady_clock;

// memcpy on host threads in 1 MiB pieces (the destination is a fresh vector: its page faults are spread too).
void copy_parallel(uint8_t* dst, const uint8_t* src, std::size_t n) {
  constexpr std::size_t kPiece = std::size_t{1} << 20;
  const auto pieces = static_cast<int64_t>((n + kPiece - 1) / kPiece);
  if (pieces <= 2) {
    std::memcpy(dst, src, n);
    return;
  }
  parallel_for(pieces, [&](int64_t p) {
    const std::size_t off = static_cast<std::size_t>(p) * kPiece;
    std::memcpy(dst + off, src + off, std::min(kPiece, n - off));
  });
}

}  // namespace

Fp8WeightQuantizer::Fp8WeightQuantizer(CudaContext& ctx) : ctx_(ctx) {
  for (auto& e : copied_) ANGELSLIM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
}

Fp8WeightQuantizer::~Fp8WeightQuantizer() {
  for (auto e : copied_)
    if (e) {
      (void)cudaEventSynchronize(e);
      (void)cudaEventDestroy(e);
    }
}

bool Fp8WeightQuantizer::quantize(std::span<const DeviceWeightsView> w, std::span<const int> group, bool per_channel,
                                  std::vector<Fp8Weight>& out, std::vector<float>& err) {
  const auto t0 = Clock::now();
  const std::size_t n_lin = w.size();
  ANGELSLIM_CHECK(per_channel || group.size() == n_lin, InvalidInput,
                  "cuda fp8 weights: {} groups for {} linears (per tensor needs one each)", group.size(), n_lin);
  std::vector<int64_t> row0(n_lin + 1, 0);
  std::size_t max_bytes = 1;
  for (std::size_t i = 0; i < n_lin; ++i) {
    ANGELSLIM_CHECK((w[i].f32 != nullptr) != (w[i].bf16 != nullptr) && w[i].rows >= 1 && w[i].cols >= 1, InvalidInput,
                    "cuda fp8 weights: linear {} has no device weights or shape [{}, {}]", i, w[i].rows, w[i].cols);
    row0[i + 1] = row0[i] + w[i].rows;
    max_bytes = std::max(max_bytes, static_cast<std::size_t>(w[i].rows * w[i].cols));
  }
  if (n_lin == 0) {
    out.clear();
    err.clear();
    return true;
  }
  cudaStream_t s = ctx_.stream();

  // Abs-max per row; the per-tensor value is their maximum (max is exact in any order).
  amax_.ensure(static_cast<std::size_t>(row0.back()));
  for (std::size_t i = 0; i < n_lin; ++i)
    ANGELSLIM_CUDA_CHECK_LAUNCH(
        kernels::fp8_row_abs_max(s, w[i].f32, w[i].bf16, w[i].rows, w[i].cols, amax_.data() + row0[i]),
        "row_abs_max_kernel");
  std::vector<float> row_amax(static_cast<std::size_t>(row0.back()));
  download(ctx_, amax_.data(), row_amax.size(), row_amax.data());
  for (const float a : row_amax)
    if (!(a <= std::numeric_limits<float>::max())) return false;  // NaN/Inf: the host path names the element

  // Scales with the host's own function (per channel [rows] per linear, back to back; per tensor one per linear).
  std::vector<float> flat;
  std::vector<Fp8Weight> res(n_lin);
  if (per_channel) {
    flat.resize(row_amax.size());
    for (std::size_t r = 0; r < flat.size(); ++r) flat[r] = ::angelslim::fp8_scale_from_amax(row_amax[r]);
    for (std::size_t i = 0; i < n_lin; ++i) res[i].scale.assign(flat.begin() + row0[i], flat.begin() + row0[i + 1]);
  } else {
    std::vector<float> lin_amax(n_lin, 0.0f);
    std::map<int, float> group_amax;
    for (std::size_t i = 0; i < n_lin; ++i) {
      for (int64_t r = row0[i]; r < row0[i + 1]; ++r)
        lin_amax[i] = std::max(lin_amax[i], row_amax[static_cast<std::size_t>(r)]);
      float& g = group_amax[group[i]];
      g = std::max(g, lin_amax[i]);
    }
    flat.resize(n_lin);
    for (std::size_t i = 0; i < n_lin; ++i) {
      flat[i] = ::angelslim::fp8_scale_from_amax(group_amax.at(group[i]));
      res[i].scale = {flat[i]};
    }
  }
  scale_.ensure(flat.size());
  ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(scale_.data(), flat.data(), flat.size() * sizeof(float), cudaMemcpyHostToDevice, s));
  err_.ensure(2 * n_lin);
  ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(err_.data(), 0, 2 * n_lin * sizeof(double), s));
  for (int k = 0; k < 2; ++k) {
    codes_[k].ensure(max_bytes);
    if (pinned_[k].size() < max_bytes) pinned_[k].reset(max_bytes);
  }
  auto finish = [&](std::size_t i) {
    const int slot = static_cast<int>(i & 1);
    ANGELSLIM_CUDA_CHECK(cudaEventSynchronize(copied_[slot]));
    copy_parallel(res[i].data.data(), pinned_[slot].data(), res[i].data.size());
  };
  auto enqueue = [&](std::size_t i) {
    const int slot = static_cast<int>(i & 1);
    const auto bytes = static_cast<std::size_t>(w[i].rows * w[i].cols);
    const float* sc = scale_.data() + (per_channel ? row0[i] : static_cast<int64_t>(i));
    ANGELSLIM_CUDA_CHECK_LAUNCH(kernels::fp8_quantize_rows(s, w[i].f32, w[i].bf16, w[i].rows, w[i].cols, sc,
                                                           per_channel, codes_[slot].data(), err_.data() + 2 * i),
                                "quantize_rows_kernel");
    ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(pinned_[slot].data(), codes_[slot].data(), bytes, cudaMemcpyDeviceToHost, s));
    ANGELSLIM_CUDA_CHECK(cudaEventRecord(copied_[slot], s));
  };
  enqueue(0);
  if (n_lin > 1) enqueue(1);
  // The output vectors (their zero-fill and page faults) on host threads while the first linears run.
  parallel_for(static_cast<int64_t>(n_lin), [&](int64_t i) {
    res[static_cast<std::size_t>(i)].data.resize(static_cast<std::size_t>(w[static_cast<std::size_t>(i)].rows *
                                                                          w[static_cast<std::size_t>(i)].cols));
  });
  // A pinned slot is refilled only after its previous codes were copied out (finish(i - 2) ran before enqueue(i)).
  for (std::size_t i = 0; i < n_lin; ++i) {
    finish(i);
    if (i + 2 < n_lin) enqueue(i + 2);
  }
  std::vector<double> sums(2 * n_lin);
  download(ctx_, err_.data(), sums.size(), sums.data());
  err.resize(n_lin);
  for (std::size_t i = 0; i < n_lin; ++i) {
    const double num = sums[2 * i], den = sums[2 * i + 1];
    err[i] = den > 0 ? static_cast<float>(std::sqrt(num / den)) : 0.0f;  // as fp8_rel_error (quant/fp8_weight.h)
  }
  out = std::move(res);
  last_s_ = std::chrono::duration<double>(Clock::now() - t0).count();
  return true;
}

bool CudaCalibActivations::fp8_weights_on_device() const {
  static const bool on = [] {
    const char* e = std::getenv("ANGELSLIM_CUDA_FP8_WEIGHTS");
    return !(e && std::string(e) == "0");
  }();
  return on && !cuda_legacy();
}

bool CudaCalibActivations::quantize_fp8_weights(const DecoderLayer& layer, std::span<const LinearId> ids,
                                                std::span<const int> group, bool per_channel,
                                                std::vector<Fp8Weight>& out, std::vector<float>& err) {
  if (!fp8_weights_on_device()) return false;
  ForwardOptions opt;
  opt.round_bf16 = bf16_;
  CudaDecoderLayer& L = bind(layer, opt);  // the layer of the last pass: nothing to upload
  std::vector<DeviceWeightsView> views;
  views.reserve(ids.size());
  for (const LinearId& id : ids) {
    const DeviceWeightsView e = L.exact_weights(id);
    if (!e.f32 && !e.bf16) {
      spdlog::debug("cuda: layer {} {}: device weights are not the exact host weights; FP8 weights on the host",
                    layer.index, id.rel_name());
      ++fp8_declined_;
      return false;
    }
    views.push_back(e);
  }
  if (!fp8_) fp8_ = std::make_unique<Fp8WeightQuantizer>(ctx_);
  if (!fp8_->quantize(views, group, per_channel, out, err)) {
    ++fp8_declined_;
    return false;
  }
  ++fp8_layers_;
  fp8_s_ += fp8_->last_seconds();
  sample_memory();
  return true;
}

}  // namespace angelslim::cuda
