// config.json parsing for Hunyuan dense/MoE checkpoints (SPEC 1.3, 1.4).
#include "angelslim/model/model_config.h"

#include <cmath>

#include "angelslim/core/error.h"
#include "angelslim/io/safetensors.h"

namespace angelslim {

using nlohmann::json;

const char* family_name(ModelFamily f) {
  switch (f) {
    case ModelFamily::kDense: return "dense";
    case ModelFamily::kMoE: return "moe";
    case ModelFamily::kOcr: return "ocr";
  }
  return "?";
}

float ModelConfig::rope_base() const {
  const double d = static_cast<double>(head_dim);
  const double base = rope_theta * std::pow(rope_alpha, d / (d - 2.0));
  return static_cast<float>(base);
}

namespace {

struct Reader {
  const json& j;
  const std::string& origin;

  const json* find(const char* key) const {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return nullptr;
    return &*it;
  }
  int64_t int_req(const char* key) const {
    const json* v = find(key);
    if (!v) throw InvalidInput(fmt::format("{}: missing field '{}'", origin, key));
    if (!v->is_number_integer()) throw InvalidInput(fmt::format("{}: field '{}' must be an integer", origin, key));
    const auto x = v->get<int64_t>();
    if (x <= 0) throw InvalidInput(fmt::format("{}: field '{}' must be positive, got {}", origin, key, x));
    return x;
  }
  bool bool_opt(const char* key, bool def) const {
    const json* v = find(key);
    if (!v) return def;
    if (!v->is_boolean()) throw InvalidInput(fmt::format("{}: field '{}' must be true or false", origin, key));
    return v->get<bool>();
  }
  double num_opt(const json& obj, const char* key, double def, const char* where) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return def;
    if (!it->is_number()) throw InvalidInput(fmt::format("{}: field '{}{}' must be a number", origin, where, key));
    return it->get<double>();
  }
  // An int or a per-layer list of ints.
  std::vector<int64_t> per_layer(const char* key, int64_t n_layers, int64_t def, bool required) const {
    const json* v = find(key);
    if (!v) {
      if (required) throw InvalidInput(fmt::format("{}: missing field '{}'", origin, key));
      return std::vector<int64_t>(static_cast<std::size_t>(n_layers), def);
    }
    if (v->is_number_integer()) return std::vector<int64_t>(static_cast<std::size_t>(n_layers), v->get<int64_t>());
    if (v->is_array()) {
      if (static_cast<int64_t>(v->size()) != n_layers)
        throw InvalidInput(fmt::format("{}: field '{}' has {} entries, expected num_hidden_layers = {}", origin, key,
                                       v->size(), n_layers));
      std::vector<int64_t> out;
      for (const auto& e : *v) {
        if (!e.is_number_integer())
          throw InvalidInput(fmt::format("{}: field '{}' must hold integers", origin, key));
        out.push_back(e.get<int64_t>());
      }
      return out;
    }
    throw InvalidInput(fmt::format("{}: field '{}' must be an integer or a list of integers", origin, key));
  }
};

// OCR token ids (top level, then text_config; v1.0 defaults) and the XD-RoPE sections (SPEC 1.4, 3.8.4).
void parse_ocr_fields(const json& root, const std::string& origin, ModelConfig& c) {
  auto id = [&](std::initializer_list<const char*> keys, int64_t def) {
    for (const json* obj : {&root, root.contains("text_config") ? &root["text_config"] : &root})
      for (const char* k : keys)
        if (auto it = obj->find(k); it != obj->end() && it->is_number_integer()) {
          const auto v = it->get<int64_t>();
          if (v < 0 || v >= c.vocab_size)
            throw InvalidInput(fmt::format("{}: field '{}' = {} is outside the vocabulary [0, {})", origin, k, v,
                                           c.vocab_size));
          return v;
        }
    if (def >= c.vocab_size)
      throw InvalidInput(fmt::format("{}: missing field '{}' (the default {} is outside the vocabulary)", origin,
                                     *keys.begin(), def));
    return def;
  };
  c.image_start_id = id({"image_start_token_id", "im_start_id"}, 120118);
  c.image_end_id = id({"image_end_token_id", "im_end_id"}, 120119);
  c.image_token_id = id({"image_token_id"}, 120120);
  c.image_newline_id = id({"image_newline_token_id", "im_newline_id"}, 120121);
  if (!root.contains("vision_config") || !root["vision_config"].is_object())
    throw InvalidInput(fmt::format("{}: missing object 'vision_config' (hunyuan_vl)", origin));
  if (c.xdrope_section.empty()) {
    // transformers 5.x spells it rope_parameters.mrope_section
    const json& t = root.contains("text_config") ? root["text_config"] : root;
    for (const char* rk : {"rope_parameters", "rope_scaling"})
      if (auto it = t.find(rk); it != t.end() && it->is_object())
        if (auto s = it->find("mrope_section"); s != it->end() && s->is_array() && c.xdrope_section.empty())
          for (const auto& v : *s) c.xdrope_section.push_back(v.get<int64_t>());
  }
  if (!c.xdrope_section.empty()) {
    int64_t sum = 0;
    for (auto v : c.xdrope_section) {
      if (v < 0) throw InvalidInput(fmt::format("{}: xdrope_section entries must be >= 0", origin));
      sum += v;
    }
    if (c.xdrope_section.size() != 4 || sum != c.head_dim / 2)
      throw InvalidInput(fmt::format("{}: xdrope_section must have 4 entries summing to head_dim/2 = {}", origin,
                                     c.head_dim / 2));
  }
}

}  // namespace

ModelConfig parse_model_config(const json& root, const std::string& origin) {
  if (!root.is_object()) throw FormatError(fmt::format("{}: not a JSON object", origin));
  ModelConfig c;
  c.raw = root;
  if (auto it = root.find("architectures"); it != root.end() && it->is_array() && !it->empty() && (*it)[0].is_string())
    c.architecture = (*it)[0].get<std::string>();
  if (auto it = root.find("model_type"); it != root.end() && it->is_string()) c.model_type = it->get<std::string>();

  const bool has_text_config = root.contains("text_config") && root["text_config"].is_object();
  if (c.architecture == "HunYuanDenseV1ForCausalLM") {
    c.family = ModelFamily::kDense;
  } else if (c.architecture == "HunYuanMoEV1ForCausalLM") {
    c.family = ModelFamily::kMoE;
  } else if (c.architecture == "HunYuanVLForConditionalGeneration") {
    c.family = ModelFamily::kOcr;
  } else if (c.architecture.empty() || c.architecture.rfind("HunYuan", 0) != 0) {
    if (!c.architecture.empty() && c.model_type.empty())
      throw Unsupported(fmt::format("{}: architectures[0] '{}' is not a supported Hunyuan architecture", origin,
                                    c.architecture));
    if (c.model_type == "hunyuan_v1_dense") c.family = ModelFamily::kDense;
    else if (c.model_type == "hunyuan_v1_moe") c.family = ModelFamily::kMoE;
    else if (c.model_type == "hunyuan_vl") c.family = ModelFamily::kOcr;
    else if (c.model_type == "hunyuan") {
      const auto ne = root.find("num_experts");
      const bool moe = ne != root.end() && ne->is_number_integer() && ne->get<int64_t>() > 1;
      c.family = moe ? ModelFamily::kMoE : ModelFamily::kDense;
    } else {
      throw Unsupported(fmt::format(
          "{}: model_type '{}' (architectures[0] '{}') is not supported; expected hunyuan_v1_dense, hunyuan_v1_moe, "
          "hunyuan or hunyuan_vl",
          origin, c.model_type, c.architecture));
    }
  } else {
    throw Unsupported(fmt::format("{}: architectures[0] '{}' is not supported", origin, c.architecture));
  }

  const json& t = has_text_config ? root["text_config"] : root;
  Reader r{t, origin};
  c.vocab_size = r.int_req("vocab_size");
  c.d_model = r.int_req("hidden_size");
  c.d_ff = r.int_req("intermediate_size");
  c.n_layers = r.int_req("num_hidden_layers");
  c.n_heads = r.int_req("num_attention_heads");
  c.n_kv_heads = r.find("num_key_value_heads") ? r.int_req("num_key_value_heads") : c.n_heads;
  if (c.n_heads % c.n_kv_heads != 0)
    throw InvalidInput(fmt::format("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", origin,
                                   c.n_heads, c.n_kv_heads));
  if (r.find("head_dim")) c.head_dim = r.int_req("head_dim");
  else if (r.find("attention_head_dim")) c.head_dim = r.int_req("attention_head_dim");
  else {
    if (c.d_model % c.n_heads != 0)
      throw InvalidInput(fmt::format("{}: hidden_size is not a multiple of num_attention_heads and no head_dim", origin));
    c.head_dim = c.d_model / c.n_heads;
  }
  if (c.head_dim % 2 != 0 || c.head_dim < 4)
    throw InvalidInput(fmt::format("{}: head_dim {} must be even and >= 4", origin, c.head_dim));
  if (const json* act = r.find("hidden_act"); act && (!act->is_string() || act->get<std::string>() != "silu"))
    throw Unsupported(fmt::format("{}: hidden_act '{}' is not supported; expected 'silu'", origin, act->dump()));
  if (const json* e = r.find("rms_norm_eps")) {
    if (!e->is_number()) throw InvalidInput(fmt::format("{}: field 'rms_norm_eps' must be a number", origin));
    c.rms_norm_eps = static_cast<float>(e->get<double>());
  }
  // Nested text configs (hunyuan_vl) may keep the flag at the top level; either place must hold a boolean.
  bool tie_default = true;
  if (const auto it = root.find("tie_word_embeddings"); it != root.end() && !it->is_null()) {
    if (!it->is_boolean())
      throw InvalidInput(fmt::format("{}: field 'tie_word_embeddings' must be true or false", origin));
    tie_default = it->get<bool>();
  }
  c.tie_word_embeddings = r.bool_opt("tie_word_embeddings", tie_default);
  c.attention_bias = r.bool_opt("attention_bias", false);
  c.mlp_bias = r.bool_opt("mlp_bias", false);
  c.use_qk_norm = r.bool_opt("use_qk_norm", true);
  if (r.bool_opt("use_cla", false))
    throw Unsupported(fmt::format("{}: use_cla true (cross-layer attention) is not supported", origin));
  if (root.contains("dtype") && !root.contains("torch_dtype")) c.dtype_key = "dtype";
  if (auto it = root.find(c.dtype_key); it != root.end() && it->is_string()) c.torch_dtype = it->get<std::string>();

  // RoPE normalisation (SPEC 1.4).
  double top_theta = r.num_opt(t, "rope_theta", 10000.0, "");
  c.rope_kind = "default";
  c.rope_theta = top_theta;
  const json* rp = r.find("rope_parameters");
  const json* rs = r.find("rope_scaling");
  const json* rope = (rp && rp->is_object()) ? rp : (rs && rs->is_object()) ? rs : nullptr;
  const char* rope_field = (rope == rp) ? "rope_parameters" : "rope_scaling";
  if (rope) {
    std::string kind;
    if (auto it = rope->find("rope_type"); it != rope->end() && it->is_string()) kind = it->get<std::string>();
    if (auto it = rope->find("type"); kind.empty() && it != rope->end() && it->is_string()) kind = it->get<std::string>();
    if (kind.empty()) kind = "default";
    if (rope == rp) c.rope_theta = r.num_opt(*rope, "rope_theta", top_theta, "rope_parameters.");
    const bool has_alpha = rope->contains("alpha") && !(*rope)["alpha"].is_null();
    if (kind == "dynamic" || kind == "xdrope") {
      if (!has_alpha)
        throw Unsupported(fmt::format("{}: {}.type '{}' without 'alpha' (factor-based NTK) is not supported", origin,
                                      rope_field, kind));
      c.rope_alpha = r.num_opt(*rope, "alpha", 1.0, fmt::format("{}.", rope_field).c_str());
      if (auto it = rope->find("xdrope_section"); it != rope->end() && it->is_array())
        for (const auto& s : *it) c.xdrope_section.push_back(s.get<int64_t>());
    } else if (kind != "default") {
      throw Unsupported(fmt::format("{}: {}.type '{}' is not supported; expected dynamic (with alpha), xdrope or "
                                    "default", origin, rope_field, kind));
    }
    c.rope_kind = kind;
  }

  if (c.family == ModelFamily::kOcr) parse_ocr_fields(root, origin, c);
  if (c.family == ModelFamily::kMoE) {
    c.n_experts = r.int_req("num_experts");
    c.moe_topk = r.per_layer("moe_topk", c.n_layers, 1, true);
    c.moe_d_ff = r.per_layer("moe_intermediate_size", c.n_layers, c.d_ff, false);
    c.n_shared_experts = r.per_layer("num_shared_expert", c.n_layers, 1, false);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const auto k = c.moe_topk[static_cast<std::size_t>(l)];
      if (k < 1 || k > c.n_experts)
        throw InvalidInput(fmt::format("{}: moe_topk[{}] = {} must be in [1, num_experts = {}]", origin, l, k,
                                       c.n_experts));
      if (c.moe_d_ff[static_cast<std::size_t>(l)] <= 0)
        throw InvalidInput(fmt::format("{}: moe_intermediate_size[{}] must be positive", origin, l));
      if (c.n_shared_experts[static_cast<std::size_t>(l)] < 0)
        throw InvalidInput(fmt::format("{}: num_shared_expert[{}] must be >= 0", origin, l));
    }
    if (!r.bool_opt("norm_topk_prob", true))
      throw Unsupported(fmt::format("{}: norm_topk_prob false is not supported", origin));
    if (const json* v = r.find("routed_scaling_factor"); v && (!v->is_number() || v->get<double>() != 1.0))
      throw Unsupported(fmt::format("{}: routed_scaling_factor {} is not supported; expected 1.0", origin, v->dump()));
    if (const json* v = r.find("moe_layer_num_skipped"); v && (!v->is_number_integer() || v->get<int64_t>() != 0))
      throw Unsupported(fmt::format("{}: moe_layer_num_skipped {} is not supported; expected 0", origin, v->dump()));
    if (r.bool_opt("group_limited_greedy", false))
      throw Unsupported(fmt::format("{}: group_limited_greedy true is not supported", origin));
    if (!r.bool_opt("use_mixed_mlp_moe", true)) {
      // Without a shared expert the mixed MLP is absent.
      for (auto& s : c.n_shared_experts) s = 0;
    }
  }
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  if (!std::filesystem::is_directory(dir))
    throw InvalidInput(fmt::format("{}: model directory does not exist", dir.string()));
  if (!std::filesystem::exists(path)) throw InvalidInput(fmt::format("{}: missing config.json", dir.string()));
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
  return parse_model_config(j, path.string());
}

}  // namespace angelslim
