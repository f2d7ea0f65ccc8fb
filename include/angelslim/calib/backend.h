// The calibration backend interface (SPEC 4.1): the calibration activations of all samples and the layer runner
// over them, with statistics collectors. CalibActivations (calib/engine.h) is the CPU implementation,
// cuda::CudaCalibActivations (backend/cuda_calib.h) the GPU one; the algorithms (FP8, GPTQ) are written once
// against this interface.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "angelslim/calib/stats.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/quant/fp8_weight.h"

namespace angelslim {

class CalibActivations;

class CalibBackend {
 public:
  virtual ~CalibBackend() = default;
  // "cpu" or "cuda".
  virtual const char* device_name() const = 0;
  virtual int64_t n_samples() const = 0;
  virtual int64_t n_tokens() const = 0;

  // Runs `layer` over every sample without changing the activations and returns what `spec` asks for.
  // opt.stop_after may end the pass early (then only the statistics before that point are complete).
  virtual LayerStats observe_stats(const DecoderLayer& layer, const ForwardOptions& opt, const StatsSpec& spec) = 0;
  // Runs `layer` over every sample, replacing the activations by the layer's outputs (opt.stop_after must be kNone),
  // and returns what `spec` asks for (observed on the way).
  virtual LayerStats advance_stats(const DecoderLayer& layer, const ForwardOptions& opt, const StatsSpec& spec) = 0;
  // The weights of linear `id` of `layer` changed since the layer was last run (GPTQ propagates quantized weights
  // to its later stages): a backend holding a copy of the layer refreshes it. The CPU backend reads `layer` itself.
  virtual void linear_changed(const DecoderLayer& /*layer*/, const LinearId& /*id*/) {}
  // The same change with the new weights given on the backend's device (a GPU solver's W_hat, [n_out, n_in]) instead
  // of in `layer`, whose host weights are then stale. False, changing nothing, where the backend cannot take them
  // from there: the caller then updates `layer` and calls linear_changed.
  virtual bool linear_changed_on_device(const DecoderLayer& /*layer*/, const LinearId& /*id*/,
                                        const DeviceMatrix& /*w*/) {
    return false;
  }
  // FP8 weight quantization on the backend's device (the CUDA backend holds the layer's weights after a pass).
  // Whether this backend offers it; if not, the FP8 quantizer quantizes on host threads while the pass runs.
  virtual bool fp8_weights_on_device() const { return false; }
  // Quantizes linears `ids` of `layer` (the layer of the last pass; another one is uploaded first) exactly as
  // quantize_fp8_with_scales / quantize_fp8_per_channel (quant/fp8_weight.h) do on the host: per tensor, the linears
  // with equal group[i] share the scale fp8_scale_from_amax(max of their abs-max); per channel, one scale per row.
  // out[i]: bytes and scales, bit for bit the host's; err[i]: ‖W − dequant(out[i])‖_F / ‖W‖_F (the host's value up to
  // FP64 summation order). Returns false, writing nothing, where it cannot guarantee that (the device does not hold
  // the weights exactly, a weight is not finite): the caller then quantizes on the host.
  virtual bool quantize_fp8_weights(const DecoderLayer& /*layer*/, std::span<const LinearId> /*ids*/,
                                    std::span<const int> /*group*/, bool /*per_channel*/,
                                    std::vector<Fp8Weight>& /*out*/, std::vector<float>& /*err*/) {
    return false;
  }
  // The host activations for algorithms that only have a CPU implementation (AWQ); nullptr when the backend keeps
  // them elsewhere.
  virtual CalibActivations* host_activations() { return nullptr; }
  // Backend facts for quant_report.json (device, placement of the activations, peak memory); null for none.
  virtual nlohmann::json report() const { return nullptr; }
};

// Options of the GPU backend (ignored by the CPU one).
struct CudaCalibOptions {
  int device = 0;
  int64_t batch_tokens = 32768;  // tokens per ragged batch through the layer (whole samples; a longer one alone)
  // Bytes of GPU memory the resident activations may use; unset = what is free after the largest layer's weights,
  // scratch and statistics (with a margin). Batches past the budget are kept in pinned host memory.
  std::optional<int64_t> activation_budget_bytes;
};

// Whether this build has the CUDA backend and a usable device. Never throws.
bool cuda_calib_available();
// Returns when cuda_calib_available(); otherwise throws Unsupported with one line naming --device cuda and why
// (a build without CUDA, or no device).
void require_cuda_device();

// The GPU backend over `samples` (token ids per sample, each >= 1 token) embedded with the model's embedding table;
// activations stored as bf16 when `bf16_storage` (lossless in the bf16 forward mode), else fp32.
// Throws Unsupported (one line, naming --device cuda) when the build has no CUDA backend or no device is present.
std::unique_ptr<CalibBackend> make_cuda_calib(const ModelConfig& cfg, const TensorStore& store,
                                              const std::vector<std::vector<int32_t>>& samples, bool bf16_storage,
                                              const CudaCalibOptions& options);

}  // namespace angelslim
