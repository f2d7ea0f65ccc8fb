// GPTQ (INT4/INT8 weight-only) for the layer-streaming pipeline (SPEC 4.4): truly sequential stages inside a
// decoder layer (q/k/v -> o -> gate/up -> down, each calibrated on inputs produced by the already-quantized
// earlier stages), quantized-output propagation, RTN fallback for starving MoE experts, act-order modes, and
// export as GPTQ v1 (symmetric) or AWQ GEMM layout (asymmetric 4-bit) per SPEC 5.3.
#pragma once
#include <map>

#include "angelslim/config/run_config.h"
#include "angelslim/quant/gptq.h"
#include "angelslim/quant/ignore_match.h"
#include "angelslim/quant/layer_quantizer.h"

namespace angelslim {

class GptqQuantizer : public LayerQuantizer {
 public:
  GptqQuantizer(const RunConfig& rc, const ModelConfig& cfg);
  bool needs_calibration() const override { return true; }
  void quantize_layer(DecoderLayer& layer, CalibActivations* acts, nlohmann::json& report) override;
  void quantize_layer_with(DecoderLayer& layer, CalibBackend* calib, nlohmann::json& report) override;
  bool backend_neutral() const override { return true; }
  bool has_output(const std::string& module) const override { return out_.count(module) != 0; }
  void write_module(const std::string& module, SafetensorsWriter& w) override;
  nlohmann::ordered_json quantization_config() const override;
  void edit_config(nlohmann::ordered_json& config) const override;
  // Whether the output uses the AWQ GEMM layout (asymmetric 4-bit).
  bool awq_layout() const { return awq_layout_; }
  // Replaces the solver (default: gptq_quantize on the CPU); `name` goes to the report ("cpu", "cuda").
  void set_solver(GptqSolver solver, std::string name) {
    solver_ = std::move(solver);
    solver_name_ = std::move(name);
  }

 private:
  struct Out {
    int rows = 0, cols = 0;
    std::vector<uint8_t> codes;   // [rows, cols], stored column order
    std::vector<float> scales;    // [rows, n_groups]
    std::vector<int32_t> zeros;   // [rows, n_groups]
    std::vector<int32_t> g_idx;   // [cols]
    std::vector<float> w_hat;     // dequant_to_bf16 only: [rows, cols]
    int n_groups = 0;
  };
  void quantize_group(DecoderLayer& layer, const std::vector<std::pair<LinearId, Linear*>>& members,
                      const std::vector<float>& h, int64_t tokens, bool starving, GptqOrder order,
                      nlohmann::json& report, std::vector<int32_t>* perm_out);
  const ModelConfig& cfg_;
  int bits_;
  int group_size_;
  bool sym_;
  bool actorder_, desc_act_, dequant_bf16_, awq_layout_;
  float damp_;
  double min_token_fraction_;
  ScaleDType scale_dtype_;
  bool awq_bf16_;
  IgnoreMatcher ignore_;
  std::vector<std::string> ignored_modules_;
  std::map<std::string, Out> out_;
  GptqSolver solver_ = gptq_quantize;
  std::string solver_name_ = "cpu";
};

// The GPU solver of a CUDA calibration backend (its device and stream): gptq_quantize with the FP64 factorisation in
// cuSOLVER and the column loop on the device. Unsupported for other backends and in builds without CUDA.
GptqSolver cuda_gptq_solver(CalibBackend& calib);

}  // namespace angelslim
