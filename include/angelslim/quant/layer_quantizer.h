// The interface every algorithm (FP8, GPTQ, AWQ) implements for the layer-streaming pipeline.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "angelslim/calib/engine.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan.h"

namespace angelslim {

class LayerQuantizer {
 public:
  virtual ~LayerQuantizer() = default;
  // Whether the algorithm needs calibration activations (fp8_dynamic does not).
  virtual bool needs_calibration() const = 0;
  // Quantizes the linears of `layer` that `quantize` selects. With calibration, `acts` holds the layer's inputs
  // and must be advanced to the next layer's inputs (the propagation rule is the algorithm's). Appends one
  // object per linear to report["linears"]. (The host-activation entry point; backend-neutral algorithms
  // implement it as quantize_layer_with(layer, acts, report).)
  virtual void quantize_layer(DecoderLayer& layer, CalibActivations* acts, nlohmann::json& report) = 0;
  // The pipeline's entry point: the same on any calibration backend (nullptr without calibration). The default,
  // for algorithms with only a host implementation, runs quantize_layer on calib->host_activations().
  virtual void quantize_layer_with(DecoderLayer& layer, CalibBackend* calib, nlohmann::json& report);
  // Whether quantize_layer_with runs on every backend (false: host activations only, i.e. --device cpu).
  virtual bool backend_neutral() const { return false; }
  // Whether the quantizer produced tensors for this full module name (e.g. "model.layers.0.self_attn.q_proj").
  virtual bool has_output(const std::string& module) const = 0;
  // Writes the tensors that replace "<module>.weight" and releases them.
  virtual void write_module(const std::string& module, SafetensorsWriter& w) = 0;
  // The same write, deferred: the module's outputs leave the quantizer now, the returned call packs and writes them
  // later. Where deferred_writes(), the call owns what it needs and may run on another thread while the quantizer
  // works on the next layer; otherwise (the default) it calls write_module and must run before the next layer.
  virtual std::function<void(SafetensorsWriter&)> take_module(const std::string& module) {
    return [this, module](SafetensorsWriter& w) { write_module(module, w); };
  }
  virtual bool deferred_writes() const { return false; }
  // Replacement bytes for an unquantized source tensor the algorithm changed (AWQ norms), else nullptr.
  virtual const std::vector<uint8_t>* modified_tensor(const std::string& /*name*/) const { return nullptr; }
  // config.json["quantization_config"] (null for none).
  virtual nlohmann::ordered_json quantization_config() const = 0;
  // Extra config.json edits (AWQ dtype key).
  virtual void edit_config(nlohmann::ordered_json& /*config*/) const {}
};

// Every linear of a layer with its id, in the order the forward pass applies them.
std::vector<std::pair<LinearId, Linear*>> layer_linears(DecoderLayer& layer);

}  // namespace angelslim
