// AWQ (INT4 AWQ GEMM / INT8 GPTQ v1) for the layer-streaming pipeline (SPEC 4.5, 5.4): per-layer activation
// statistics, alpha grid search per scaling group, exact folding of the inverse scales into norms / previous
// linears (router compensation for MoE), optional clip search, FP propagation, export on the AWQ grids.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "angelslim/config/run_config.h"
#include "angelslim/quant/grid.h"
#include "angelslim/quant/ignore_match.h"
#include "angelslim/quant/layer_quantizer.h"

namespace angelslim {

struct AwqOptions {
  // Token budget of the alpha search on the nonlinear sub-blocks (attn-in: whole samples, every ceil(T/budget)-th
  // sample; mlp-in / moe-in: every ceil(T/budget)-th token). The single-linear groups (mlp-out, shared-out,
  // expert-out, attn-out) always use every token through their Gram matrix. 0 = every token (SPEC 4.5.2 exactly).
  // The default keeps a CPU run of the fixtures at 128 x 512 tokens to seconds per layer; see the report's
  // "search_tokens" for the count used.
  int64_t search_tokens = 4096;
  // Tests: skip the search and use this alpha for every group (expert-out of a starving expert keeps s = 1).
  std::optional<float> fixed_alpha;
};

class AwqQuantizer : public LayerQuantizer {
 public:
  // Reads the source dtypes of the norms and routers from the checkpoint at rc.model.model_path.
  AwqQuantizer(const RunConfig& rc, const ModelConfig& cfg, AwqOptions options = {});
  ~AwqQuantizer() override;
  bool needs_calibration() const override { return true; }
  void quantize_layer(DecoderLayer& layer, CalibActivations* acts, nlohmann::json& report) override;
  // The host path for host activations; on a GPU backend, cuda_awq_quantize_layer (backend/cuda_awq.h).
  void quantize_layer_with(DecoderLayer& layer, CalibBackend* calib, nlohmann::json& report) override;
  bool backend_neutral() const override { return true; }
  bool has_output(const std::string& module) const override { return out_.count(module) != 0; }
  void write_module(const std::string& module, SafetensorsWriter& w) override;
  const std::vector<uint8_t>* modified_tensor(const std::string& name) const override;
  nlohmann::ordered_json quantization_config() const override;
  void edit_config(nlohmann::ordered_json& config) const override;

  // The export grid (AWQ-asym for zero_point and 4 bits, AWQ-sym otherwise; F16/BF16 scales for 4 bits,
  // BF16 for 8 bits), also used by the search and the clip search.
  const GridSpec& grid() const { return grid_; }

 private:
  struct Out {
    int rows = 0, cols = 0, n_groups = 0;
    std::vector<uint8_t> codes;  // [rows, cols]
    std::vector<float> scales;   // [rows, n_groups]
    std::vector<int32_t> zeros;  // [rows, n_groups]
  };
  struct Impl;
  const ModelConfig& cfg_;
  AwqOptions opt_;
  int bits_;
  bool mse_range_;
  bool awq_bf16_;
  double min_token_fraction_;
  bool gptq_rounding_;  // quant_method.weight_rounding: gptq (ext): GPTQ error feedback on the AWQ grid
  float damp_;
  GridSpec grid_;
  IgnoreMatcher ignore_;
  std::vector<std::string> not_convert_;  // modules_to_not_convert (empty -> null)
  std::unique_ptr<TensorStore> source_;   // for the source dtypes of modified tensors
  std::map<std::string, Out> out_;
  std::map<std::string, std::vector<uint8_t>> modified_;  // tensor name -> bytes in the source dtype
};

}  // namespace angelslim
