// AWQ on the GPU calibration backend (issue 6; SPEC 4.5): one layer's statistics pass, the alpha search of every
// scaling group (per alpha: scales, fake quantization and the evaluation of the sub-block or the Gram-matrix loss,
// all on the device), the folding of the chosen scales (host, as the CPU quantizer), the clip search on the device
// (mse_range) and the quantization on the export grid. The decisions and the report follow
// src/quant/awq_quantizer.cpp rule for rule; AwqQuantizer::quantize_layer_with calls this for a GPU backend.
// This header has no CUDA types: a build without CUDA links a stub that throws Unsupported.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "angelslim/calib/backend.h"
#include "angelslim/core/dtype.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/quant/grid.h"

namespace angelslim {

// What the AWQ quantizer decides for the GPU run (its options and configuration).
struct AwqDeviceParams {
  GridSpec grid;                                 // the export grid (also the search's)
  bool mse_range = false;                        // clip search
  double min_token_fraction = 0.0;               // starving-expert threshold (fraction of the calibration tokens)
  int64_t search_tokens = 4096;                  // AwqOptions::search_tokens
  std::optional<float> fixed_alpha;              // AwqOptions::fixed_alpha
  std::function<bool(const LinearId&)> ignored;  // ignore_layers
  std::function<DType(const std::string&)> source_dtype;  // source dtype of a checkpoint tensor
};

// One quantized linear: codes [rows, cols], scales / zeros [rows, n_groups].
struct AwqDeviceLinear {
  int rows = 0, cols = 0, n_groups = 0;
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  std::vector<int32_t> zeros;
};

struct AwqDeviceOutput {
  std::map<std::string, AwqDeviceLinear> linears;        // full module name -> quantized linear
  std::map<std::string, std::vector<uint8_t>> modified;  // tensor name -> bytes in the source dtype
};

// Quantizes `layer` (its weights, norms, router and biases are changed in place as on the CPU) on the GPU backend
// `calib` and advances the activations to the next layer's inputs. Appends the per-linear records to
// report["linears"] and sets report["awq_groups"], report["awq_seconds"] (and the expert counts for MoE) as the CPU
// quantizer does. Throws Unsupported when `calib` is not the GPU backend or the build has no CUDA.
void cuda_awq_quantize_layer(const ModelConfig& cfg, const AwqDeviceParams& params, DecoderLayer& layer,
                             CalibBackend& calib, nlohmann::json& report, AwqDeviceOutput& out);

}  // namespace angelslim
