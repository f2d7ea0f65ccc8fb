// FP8 static/dynamic W8A8 (SPEC 4.3): per-tensor (or per-channel) e4m3 weights, static per-tensor input
// scales from abs-max over real calibration tokens, scales shared across the projections vLLM fuses.
// Optionally (fp8_static, weight_rounding: gptq) the weights keep those scales but are rounded with GPTQ's
// error feedback on the calibration Hessian (SPEC 4.3.5).
#pragma once
#include <map>

#include "angelslim/config/run_config.h"
#include "angelslim/quant/fp8_weight.h"
#include "angelslim/quant/ignore_match.h"
#include "angelslim/quant/layer_quantizer.h"

namespace angelslim {

class Fp8Quantizer : public LayerQuantizer {
 public:
  Fp8Quantizer(const RunConfig& rc, const ModelConfig& cfg, std::vector<std::string> ignore_list);
  bool needs_calibration() const override { return static_; }
  void quantize_layer(DecoderLayer& layer, CalibActivations* acts, nlohmann::json& report) override;
  void quantize_layer_with(DecoderLayer& layer, CalibBackend* calib, nlohmann::json& report) override;
  bool backend_neutral() const override { return true; }
  bool has_output(const std::string& module) const override { return out_.count(module) != 0; }
  void write_module(const std::string& module, SafetensorsWriter& w) override;
  std::function<void(SafetensorsWriter&)> take_module(const std::string& module) override;
  bool deferred_writes() const override { return true; }
  nlohmann::ordered_json quantization_config() const override;

 private:
  struct Out {
    Fp8Weight w;
    int64_t rows = 0, cols = 0;
    float input_scale = 0.0f;
  };
  const ModelConfig& cfg_;
  bool static_;
  bool per_channel_;
  bool save_fp8_;
  bool gptq_rounding_;  // quant_method.weight_rounding: gptq (ext, fp8_static)
  double damp_percent_;
  IgnoreMatcher ignore_;
  std::vector<std::string> ignore_list_;  // the "ignore" list written to the config (SPEC 5.5)
  std::map<std::string, Out> out_;
};

}  // namespace angelslim
