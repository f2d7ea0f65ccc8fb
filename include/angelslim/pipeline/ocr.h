// HunyuanOCR parts of a quantization run: the multimodal calibration set run through the vision tower
// (SPEC 4.1 step 3), FP8 of the ViT linears with quant_vit (SPEC 4.3.6), and the vision entries of each
// format's config (SPEC 5.3.1 `dynamic`, 5.4 `modules_to_not_convert`, 5.5 FP8 ignore list).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "angelslim/config/run_config.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/model_config.h"

namespace angelslim {

class VitFp8Quantizer;
class VisionObserver;

struct OcrCalibration {
  std::vector<std::vector<int32_t>> ids;  // per sample, image placeholders expanded
  std::vector<int64_t> image_rows;        // token rows (over all samples back to back) that hold image embeddings
  std::vector<float> image_embeds;        // [image_rows.size(), d_model]
  std::vector<int32_t> xd_pos;            // [total tokens, 4]
  nlohmann::json report;                  // dataset statistics for quant_report.json
  std::string template_sha256;
};

// Loads the MultiModalDataset and runs every image through the vision tower and adapter (BF16 unless the model
// runs in float32). With `vit_fp8` (FP8 + quant_vit), the ViT linear inputs are observed on the way.
OcrCalibration prepare_ocr_calibration(const RunConfig& rc, const ModelConfig& cfg, const TensorStore& store,
                                       VitFp8Quantizer* vit_fp8);

// FP8 `ignore` / `ignored_layers` entries for the vision tower (SPEC 5.5): with quant_vit false every ViT linear
// and perceive.mlp in the input's naming plus "re:visual\\..*" (compressed-tensors) or the fused qkv names
// (save_name fp8); with quant_vit true only the adapter linear perceive.mlp, plus its vLLM name
// ("re:visual\\.perceive\\..*", or "visual.perceive.mlp" with save_name fp8).
std::vector<std::string> ocr_fp8_ignore(const RunConfig& rc, const ModelConfig& cfg, const TensorStore& store);

// GPTQ: adds the `dynamic` negative rule for the vision tower (SPEC 5.3.1); GPTQ in the AWQ layout: sets
// modules_to_not_convert to ["visual", "vit"] (SPEC 5.4). No-op for other formats.
void ocr_edit_quant_config(const ModelConfig& cfg, nlohmann::ordered_json& config);

// FP8 of the ViT linears (quant_vit, SPEC 4.3.6): observes the inputs' abs-max during the calibration pass, then
// writes weight (F8_E4M3), weight_scale (F32) and input_scale (F32, static only) per linear, q/k/v sharing one
// weight scale (vLLM fuses them). Conv2d and perceive.mlp stay BF16.
class VitFp8Quantizer {
 public:
  VitFp8Quantizer(const RunConfig& rc, const ModelConfig& cfg, const TensorStore& store);
  ~VitFp8Quantizer();
  // The observer to pass to the vision forward (model/vision.h VisionObserver).
  VisionObserver* observer();
  // Quantizes and writes the ViT linears; returns the source tensor names it replaced (their `.weight`s).
  std::set<std::string> write(const TensorStore& store, SafetensorsWriter& w, nlohmann::json& report);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace angelslim
