// HunyuanOCR parts of a quantization run; see include/angelslim/pipeline/ocr.h.
#include "angelslim/pipeline/ocr.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "angelslim/core/error.h"
#include "angelslim/data/multimodal_dataset.h"
#include "angelslim/model/vision.h"
#include "angelslim/quant/fp8_weight.h"
#include "angelslim/text/chat_template.h"
#include "angelslim/text/tokenizer.h"

namespace angelslim {

using nlohmann::json;
using nlohmann::ordered_json;

// ---------------------------------------------------------------- quant_vit

struct VitFp8Quantizer::Impl : VisionObserver {
  const ModelConfig& cfg;
  VisionConfig vc;
  std::string prefix;
  bool per_channel = false;
  bool is_static = true;
  std::map<std::pair<int64_t, int>, float> amax;  // (layer, kind) -> max |x|

  void observe(int64_t layer, VisionLinearKind kind, const float* x, int64_t n, int64_t n_in) override {
    float& a = amax[{layer, static_cast<int>(kind)}];
    a = std::max(a, abs_max(std::span<const float>(x, static_cast<std::size_t>(n * n_in)), "ViT activation"));
  }
  Impl(const ModelConfig& c) : cfg(c) {}
};

VitFp8Quantizer::VitFp8Quantizer(const RunConfig& rc, const ModelConfig& cfg, const TensorStore& store)
    : impl_(std::make_unique<Impl>(cfg)) {
  impl_->vc = load_vision_config(cfg, store.dir().string() + "/config.json");
  impl_->prefix = vision_prefix(store);
  impl_->per_channel = rc.quant.weight == WeightGranularity::kPerChannel;
  impl_->is_static = rc.quant.algo == QuantAlgo::kFp8Static;
}

VitFp8Quantizer::~VitFp8Quantizer() = default;

VisionObserver* VitFp8Quantizer::observer() { return impl_.get(); }

std::set<std::string> VitFp8Quantizer::write(const TensorStore& store, SafetensorsWriter& w, json& report) {
  const auto& vc = impl_->vc;
  std::set<std::string> replaced;
  report = json::array();
  const auto kinds = {VisionLinearKind::kQ, VisionLinearKind::kK,   VisionLinearKind::kV,
                      VisionLinearKind::kO, VisionLinearKind::kFc1, VisionLinearKind::kFc2};
  for (int64_t l = 0; l < vc.n_layers; ++l) {
    // q/k/v share the max weight scale (per tensor), as vLLM fuses them (SPEC 4.3.3).
    float qkv_amax = 0.0f;
    std::map<int, std::vector<float>> weights;
    for (auto k : kinds) {
      const std::string m = vision_linear_name(impl_->prefix, l, k);
      const auto& t = store.get(m + ".weight");
      weights[static_cast<int>(k)] = t.to_f32();
      if (k == VisionLinearKind::kQ || k == VisionLinearKind::kK || k == VisionLinearKind::kV)
        qkv_amax = std::max(qkv_amax, abs_max(weights[static_cast<int>(k)], "ViT weight"));
    }
    for (auto k : kinds) {
      const std::string m = vision_linear_name(impl_->prefix, l, k);
      const auto& t = store.get(m + ".weight");
      const int rows = static_cast<int>(t.shape.at(0)), cols = static_cast<int>(t.shape.at(1));
      const auto& wf = weights[static_cast<int>(k)];
      Fp8Weight q;
      const bool qkv = k == VisionLinearKind::kQ || k == VisionLinearKind::kK || k == VisionLinearKind::kV;
      if (impl_->per_channel) {
        q = quantize_fp8_per_channel(wf, rows, cols);
      } else if (qkv) {
        const float s = fp8_scale_from_amax(qkv_amax);
        q = quantize_fp8_with_scales(wf, rows, cols, std::span<const float>(&s, 1));
      } else {
        q = quantize_fp8_per_tensor(wf, rows, cols);
      }
      w.add(m + ".weight", DType::kF8E4M3, {rows, cols}, q.data);
      if (impl_->per_channel)
        w.add_f32(m + ".weight_scale", {rows, 1}, q.scale);
      else
        w.add_f32(m + ".weight_scale", {1}, q.scale);
      json rep = {{"name", m}, {"weight_scale", impl_->per_channel ? json(nullptr) : json(q.scale[0])}};
      if (impl_->is_static) {
        auto it = impl_->amax.find({l, static_cast<int>(k)});
        ANGELSLIM_CHECK(it != impl_->amax.end() && it->second > 0.0f, InvalidInput,
                        "quant_vit: no calibration image reached {} (the dataset needs images)", m);
        const float is = fp8_scale_from_amax(it->second);
        w.add_f32(m + ".input_scale", {1}, std::vector<float>{is});
        rep["input_scale"] = is;
      }
      replaced.insert(m + ".weight");
      report.push_back(rep);
    }
  }
  return replaced;
}

// ---------------------------------------------------------------- calibration

OcrCalibration prepare_ocr_calibration(const RunConfig& rc, const ModelConfig& cfg, const TensorStore& store,
                                       VitFp8Quantizer* vit_fp8) {
  const std::filesystem::path dir = rc.model.model_path;
  const auto tok = Tokenizer::load(dir);
  const auto tmpl = ChatTemplate::load(dir);
  const auto proc = load_image_processor_config(dir);
  MultiModalStats stats;
  const auto& ds = *rc.dataset;
  const auto samples = load_multimodal_dataset(ds.data_path, *tok, tmpl, cfg, proc, ds.max_seq_length, ds.num_samples,
                                               ds.shuffle, rc.global.seed, &stats);
  if (samples.empty()) throw InvalidInput(fmt::format("{}: no usable calibration sample", ds.data_path));
  OcrCalibration out;
  out.template_sha256 = tmpl.sha256();
  int64_t n_images = 0;
  for (const auto& s : samples) n_images += static_cast<int64_t>(s.images.size());
  std::unique_ptr<VisionTower> tower;
  if (n_images > 0) tower = std::make_unique<VisionTower>(load_vision_tower(store, cfg));
  VisionOptions vo;
  vo.round_bf16 = cfg.torch_dtype != "float32" && rc.model.torch_dtype != TorchDtype::kFloat32;
  const int64_t H = cfg.d_model;
  int64_t base = 0;
  for (const auto& s : samples) {
    for (std::size_t k = 0; k < s.images.size(); ++k) {
      const auto emb = encode_image(*tower, s.images[k], vo, vit_fp8 ? vit_fp8->observer() : nullptr);
      const int64_t n_img = static_cast<int64_t>(emb.size()) / H;
      const int64_t b = s.image_begin[k];
      // A right-truncated sample keeps whole image spans only (SPEC 1.7.3), so every row exists.
      ANGELSLIM_ASSERT(b + n_img <= static_cast<int64_t>(s.ids.size()));
      for (int64_t i = 0; i < n_img; ++i) out.image_rows.push_back(base + b + i);
      out.image_embeds.insert(out.image_embeds.end(), emb.begin(), emb.end());
    }
    out.ids.push_back(s.ids);
    out.xd_pos.insert(out.xd_pos.end(), s.xd_pos.begin(), s.xd_pos.end());
    base += static_cast<int64_t>(s.ids.size());
  }
  out.report = stats.to_json();
  out.report["images"] = n_images;
  out.report["vision_precision"] = vo.round_bf16 ? "bf16" : "fp32";
  spdlog::info("multimodal calibration: {} samples ({} with an image, {} text only), {} image tokens",
               stats.samples_kept, stats.with_image, stats.text_only, stats.image_tokens_total);
  return out;
}

// ---------------------------------------------------------------- configs

std::vector<std::string> ocr_fp8_ignore(const RunConfig& rc, const ModelConfig& cfg, const TensorStore& store) {
  const auto vc = load_vision_config(cfg, store.dir().string() + "/config.json");
  const std::string p = vision_prefix(store);
  std::vector<std::string> out{p + "perceive.mlp"};
  if (rc.quant.quant_vit) {
    // The adapter linear stays BF16; vLLM names it visual.perceive.mlp.
    out.push_back(rc.quant.save_name == SaveName::kFp8 ? "visual.perceive.mlp" : "re:visual\\.perceive\\..*");
    return out;
  }
  for (int64_t l = 0; l < vc.n_layers; ++l)
    for (auto k : {VisionLinearKind::kQ, VisionLinearKind::kK, VisionLinearKind::kV, VisionLinearKind::kO,
                   VisionLinearKind::kFc1, VisionLinearKind::kFc2})
      out.push_back(vision_linear_name(p, l, k));
  if (rc.quant.save_name == SaveName::kFp8) {
    // vLLM's native FP8 config matches exact names only: add its fused vision qkv names (both revisions).
    for (int64_t l = 0; l < vc.n_layers; ++l) {
      out.push_back(p + "layers." + std::to_string(l) + ".self_attn.qkv");
      out.push_back(p + "layers." + std::to_string(l) + ".attn.qkv");
    }
  } else {
    out.push_back("re:visual\\..*");
  }
  return out;
}

void ocr_edit_quant_config(const ModelConfig& cfg, ordered_json& config) {
  if (cfg.family != ModelFamily::kOcr) return;
  auto it = config.find("quantization_config");
  if (it == config.end() || !it->is_object()) return;
  const std::string method = it->value("quant_method", "");
  if (method == "gptq") {
    (*it)["dynamic"] = {{"-:.*(vit|visual|vision_tower)\\..*", ordered_json::object()}};
  } else if (method == "awq") {
    auto& m = (*it)["modules_to_not_convert"];
    if (!m.is_array()) m = ordered_json::array();
    for (const char* name : {"visual", "vit"})
      if (std::find(m.begin(), m.end(), name) == m.end()) m.push_back(name);
  }
}

}  // namespace angelslim
