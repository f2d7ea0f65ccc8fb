// Hunyuan model configuration read from config.json (SPEC 1.3, 1.4): dense v1, MoE v1 (A13B).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace angelslim {

enum class ModelFamily { kDense, kMoE, kOcr };
const char* family_name(ModelFamily f);

struct ModelConfig {
  ModelFamily family = ModelFamily::kDense;
  std::string architecture;  // architectures[0] (may be empty)
  std::string model_type;
  int64_t vocab_size = 0;    // V
  int64_t d_model = 0;       // hidden_size H
  int64_t d_ff = 0;          // intermediate_size I (dense MLP; shared expert unit width)
  int64_t n_layers = 0;      // L
  int64_t n_heads = 0;       // nH
  int64_t n_kv_heads = 0;    // nKV
  int64_t head_dim = 0;      // D
  float rms_norm_eps = 1e-5f;
  std::string rope_kind;     // "default" | "dynamic" | "xdrope"
  double rope_theta = 10000.0;
  double rope_alpha = 1.0;   // NTK alpha (1 when kind is default)
  std::vector<int64_t> xdrope_section;
  bool tie_word_embeddings = true;
  bool attention_bias = false;
  bool mlp_bias = false;
  bool use_qk_norm = true;
  std::string dtype_key = "torch_dtype";  // the key the source used ("torch_dtype" or "dtype")
  std::string torch_dtype = "bfloat16";
  // MoE (per layer; size n_layers when family == kMoE)
  int64_t n_experts = 0;
  std::vector<int64_t> moe_topk;
  std::vector<int64_t> moe_d_ff;          // routed expert width per layer
  std::vector<int64_t> n_shared_experts;  // shared expert multiplier per layer
  // OCR (hunyuan_vl, SPEC 1.4): special token ids; the vision tower's own fields are read by
  // load_vision_config (model/vision.h) from raw["vision_config"].
  int64_t image_start_id = -1, image_end_id = -1, image_token_id = -1, image_newline_id = -1;
  nlohmann::json raw;                     // the whole config.json, kept for the writer

  // Effective RoPE base: theta * alpha^(D/(D-2)) computed in double, rounded to f32 (SPEC 3.3).
  float rope_base() const;
  int64_t shared_d_ff(int64_t layer) const { return d_ff * n_shared_experts.at(layer); }
};

// Parses <dir>/config.json. Errors name the file and field (InvalidInput / Unsupported / FormatError).
ModelConfig load_model_config(const std::filesystem::path& dir);
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& origin);

}  // namespace angelslim
