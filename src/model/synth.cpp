// Random-weight Hunyuan checkpoints; see include/angelslim/model/synth.h. Shapes: SPEC 1.4 "Released
// configurations" and 1.5; generator: splitmix64 (Steele et al. 2014) in counter mode + Irwin-Hall(4).
#include "angelslim/model/synth.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <future>
#include <span>
#include <thread>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"
#include "angelslim/core/progress.h"
#include "angelslim/export/output_dir.h"
#include "angelslim/io/safetensors.h"

namespace angelslim {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

enum class TokenizerKind { kHfJson, kTiktoken };

struct Preset {
  const char* name;
  bool moe;
  bool ocr;
  int64_t vocab, d_model, d_ff, n_layers, n_heads, n_kv_heads, head_dim;
  int64_t n_experts, top_k, n_shared, moe_d_ff;  // MoE only
  TokenizerKind tokenizer;
};

// SPEC 1.4 "Released configurations". The 4B layer count (32) is marked unverified there: check a real config.json.
constexpr Preset kPresets[] = {
    {"hunyuan-0.5b", false, false, 120818, 1024, 3584, 24, 16, 8, 128, 0, 0, 0, 0, TokenizerKind::kHfJson},
    {"hunyuan-1.8b", false, false, 120818, 2048, 6144, 32, 16, 4, 128, 0, 0, 0, 0, TokenizerKind::kHfJson},
    {"hunyuan-4b", false, false, 120818, 3072, 8192, 32, 32, 8, 128, 0, 0, 0, 0, TokenizerKind::kHfJson},
    {"hunyuan-7b", false, false, 128167, 4096, 14336, 32, 32, 8, 128, 0, 0, 0, 0, TokenizerKind::kTiktoken},
    {"hunyuan-a13b", true, false, 128167, 4096, 3072, 32, 32, 8, 128, 64, 8, 1, 3072, TokenizerKind::kTiktoken},
    {"hunyuan-ocr", false, true, 120818, 1024, 3584, 24, 16, 8, 128, 0, 0, 0, 0, TokenizerKind::kHfJson},
};

// hy.tiktoken: 5 named specials + <|extra_0..204|> follow the ranked tokens (SPEC 1.6.2).
constexpr int64_t kTiktokenSpecials = 5 + 205;

const Preset& find_preset(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return p;
  std::string all;
  for (const auto& n : synth_presets()) all += (all.empty() ? "" : ", ") + n;
  throw InvalidInput(fmt::format("synth: unknown preset '{}'; expected one of: {}", name, all));
}

// HunyuanOCR v1.0 vision tower and processor (SPEC 1.4 OCR fields, 1.5): 27 blocks of width 1152.
constexpr int64_t kVitWidth = 1152, kVitFf = 4304, kVitLayers = 27, kVitHeads = 16, kVitPatch = 16, kVitMaxImage = 2048;

// A preset with the options' overrides applied.
struct Shape {
  Preset p;
  int64_t n_layers, vocab, n_experts, top_k;
};

Shape resolve(const SynthOptions& opt) {
  Shape s{find_preset(opt.preset), 0, 0, 0, 0};
  ANGELSLIM_CHECK(opt.layers == -1 || opt.layers >= 1, InvalidInput, "synth: --layers must be >= 1, got {}",
                  opt.layers);
  ANGELSLIM_CHECK(opt.vocab == -1 || opt.vocab >= 1, InvalidInput, "synth: vocab override must be >= 1, got {}",
                  opt.vocab);
  ANGELSLIM_CHECK(opt.experts == -1 || s.p.moe, InvalidInput,
                  "synth: an experts override needs a MoE preset; '{}' is dense", s.p.name);
  ANGELSLIM_CHECK(opt.experts == -1 || opt.experts >= 1, InvalidInput,
                  "synth: experts override must be >= 1, got {}", opt.experts);
  s.n_layers = opt.layers == -1 ? s.p.n_layers : opt.layers;
  s.vocab = opt.vocab == -1 ? s.p.vocab : opt.vocab;
  s.n_experts = opt.experts == -1 ? s.p.n_experts : opt.experts;
  s.top_k = std::min(s.p.top_k, s.n_experts);
  return s;
}

// Token ids of the two tokenizer families (SPEC 1.6.1, 1.6.2; tiktoken values as in the released A13B config).
struct TokenIds {
  int64_t bos, eos, pad, eod, sep;
};
TokenIds token_ids(TokenizerKind k) {
  if (k == TokenizerKind::kHfJson) return {120000, 120020, 120002, 120020, 120021};
  return {1, 127960, 127961, 127967, 127962};
}

ojson per_layer(int64_t n, int64_t v) { return ojson(std::vector<int64_t>(static_cast<std::size_t>(n), v)); }

ojson config_json(const Shape& s, const SynthOptions& opt) {
  const Preset& p = s.p;
  const TokenIds ids = token_ids(p.tokenizer);
  ojson j;
  j["architectures"] = {p.ocr ? "HunYuanVLForConditionalGeneration"
                             : p.moe ? "HunYuanMoEV1ForCausalLM"
                                     : "HunYuanDenseV1ForCausalLM"};
  j["model_type"] = p.ocr ? "hunyuan_vl" : p.moe ? "hunyuan_v1_moe" : "hunyuan_v1_dense";
  j["vocab_size"] = s.vocab;
  j["org_vocab_size"] = s.vocab;
  j["hidden_size"] = p.d_model;
  j["intermediate_size"] = p.d_ff;
  j["num_hidden_layers"] = s.n_layers;
  j["num_attention_heads"] = p.n_heads;
  j["num_key_value_heads"] = p.n_kv_heads;
  j["head_dim"] = p.head_dim;
  j["attention_head_dim"] = p.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = 32768;
  j["rms_norm_eps"] = 1e-5;
  j["initializer_range"] = 0.02;
  j["rope_theta"] = 10000.0;
  // The released configs carry these extra (ignored) NTK fields next to type and alpha.
  j["rope_scaling"] = {{"alpha", 1000.0}, {"beta_fast", 32},    {"beta_slow", 1},        {"factor", 1.0},
                       {"mscale", 1.0},   {"mscale_all_dim", 1.0}, {"type", "dynamic"}};
  if (p.ocr) {
    j["rope_scaling"] = {{"alpha", 1000.0}, {"type", "xdrope"}, {"xdrope_section", {16, 16, 16, 16}}};
    // The image token ids (SPEC 1.6.1); moved to the top of a smaller test vocabulary.
    const int64_t first = s.vocab >= 120122 ? 120118 : s.vocab - 4;
    j["image_start_token_id"] = first;
    j["image_end_token_id"] = first + 1;
    j["image_token_id"] = first + 2;
    j["image_newline_token_id"] = first + 3;
    j["vision_config"] = {{"hidden_size", kVitWidth},      {"intermediate_size", kVitFf},
                          {"num_hidden_layers", kVitLayers}, {"num_attention_heads", kVitHeads},
                          {"patch_size", kVitPatch},       {"spatial_merge_size", 2},
                          {"temporal_patch_size", 1},      {"max_image_size", kVitMaxImage},
                          {"out_hidden_size", p.d_model},  {"hidden_act", "gelu"},
                          {"rms_norm_eps", 1e-5},          {"interpolate_mode", "bilinear"},
                          {"num_channels", 3}};
  }
  if (p.moe) {
    j["num_experts"] = s.n_experts;
    j["moe_topk"] = per_layer(s.n_layers, s.top_k);
    j["moe_intermediate_size"] = per_layer(s.n_layers, p.moe_d_ff);
    j["num_shared_expert"] = per_layer(s.n_layers, p.n_shared);
    j["use_mixed_mlp_moe"] = true;
    j["moe_layer_num_skipped"] = 0;
    j["norm_topk_prob"] = true;
    j["routed_scaling_factor"] = 1.0;
    j["moe_drop_tokens"] = false;
    j["group_limited_greedy"] = false;
  }
  j["use_qk_norm"] = true;
  j["use_cla"] = false;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["tie_word_embeddings"] = true;
  j["bos_token_id"] = ids.bos;
  j["eos_token_id"] = ids.eos;
  j["pad_token_id"] = ids.pad;
  j["eod_token_id"] = ids.eod;
  j["sep_token_id"] = ids.sep;
  j["torch_dtype"] = "bfloat16";
  j["use_cache"] = true;
  // Provenance: a random-weight checkpoint must never pass for a released one.
  j["angelslim_synth"] = {{"preset", p.name}, {"seed", opt.seed}};
  return j;
}

ojson generation_config_json(const Preset& p) {
  const TokenIds ids = token_ids(p.tokenizer);
  ojson j;
  if (p.tokenizer == TokenizerKind::kHfJson) {
    j["bos_token_id"] = ids.bos;
    j["eos_token_id"] = ids.eos;
  } else {
    j["eos_token_id"] = {ids.eos, ids.eod};
  }
  j["pad_token_id"] = ids.pad;
  j["do_sample"] = true;
  j["top_k"] = 20;
  j["top_p"] = 0.8;
  j["repetition_penalty"] = 1.05;
  j["temperature"] = 0.7;
  return j;
}

// ------------------------------------------------------------------------------------------ tokenizer files

const char* const kTokenizerFiles[] = {"tokenizer.json",          "tokenizer_config.json", "chat_template.jinja",
                                       "hy.tiktoken",             "tokenization_hy.py",    "special_tokens_map.json",
                                       "generation_config.json"};

nlohmann::json parse_json_file(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
}

void check_id_fits(int64_t id, int64_t vocab, const fs::path& file, const std::string& what, const char* preset) {
  ANGELSLIM_CHECK(id >= 0 && id < vocab, InvalidInput,
                  "{}: token id {} ({}) does not fit vocab_size {} of preset {}", file.string(), id, what, vocab,
                  preset);
}

// Every id the tokenizer in `dir` can produce must be < vocab (SPEC 1.6).
void check_tokenizer(const fs::path& dir, int64_t vocab, const char* preset) {
  ANGELSLIM_CHECK(fs::is_directory(dir), InvalidInput, "{}: tokenizer directory does not exist", dir.string());
  const fs::path tj = dir / "tokenizer.json", tt = dir / "hy.tiktoken", tc = dir / "tokenizer_config.json";
  ANGELSLIM_CHECK(fs::exists(tj) || fs::exists(tt), InvalidInput,
                  "{}: no tokenizer.json or hy.tiktoken in the tokenizer directory", dir.string());
  if (fs::exists(tj)) {
    const auto j = parse_json_file(tj);
    const auto model = j.find("model");
    ANGELSLIM_CHECK(model != j.end() && model->is_object() && model->contains("vocab") &&
                        (*model)["vocab"].is_object(),
                    FormatError, "{}: expected an object 'model.vocab'", tj.string());
    for (const auto& [tok, id] : (*model)["vocab"].items()) {
      ANGELSLIM_CHECK(id.is_number_integer(), FormatError, "{}: model.vocab['{}'] is not an integer id", tj.string(),
                      tok);
      check_id_fits(id.get<int64_t>(), vocab, tj, fmt::format("model.vocab '{}'", tok), preset);
    }
    if (auto at = j.find("added_tokens"); at != j.end() && at->is_array())
      for (const auto& t : *at) {
        ANGELSLIM_CHECK(t.is_object() && t.contains("id") && t["id"].is_number_integer(), FormatError,
                        "{}: added_tokens entry without an integer 'id'", tj.string());
        const auto c = t.find("content");
        check_id_fits(t["id"].get<int64_t>(), vocab, tj,
                      fmt::format("added_tokens '{}'", c != t.end() && c->is_string() ? c->get<std::string>() : "?"),
                      preset);
      }
  }
  if (fs::exists(tt)) {
    // One ranked token per non-empty line (ranks 0..n-1), then the specials.
    std::ifstream in(tt, std::ios::binary);
    ANGELSLIM_CHECK(in, IoError, "{}: cannot open", tt.string());
    int64_t n = 0;
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) ++n;
    check_id_fits(n + kTiktokenSpecials - 1, vocab, tt,
                  fmt::format("last special after {} ranked tokens and {} specials", n, kTiktokenSpecials), preset);
  }
  if (fs::exists(tc)) {
    const auto j = parse_json_file(tc);
    if (auto at = j.find("added_tokens_decoder"); at != j.end() && at->is_object())
      for (const auto& [key, v] : at->items()) {
        int64_t id = -1;
        try {
          std::size_t used = 0;
          id = std::stoll(key, &used);
          if (used != key.size()) id = -1;
        } catch (const std::exception&) {
          id = -1;
        }
        ANGELSLIM_CHECK(id >= 0, FormatError, "{}: added_tokens_decoder key '{}' is not a token id", tc.string(), key);
        check_id_fits(id, vocab, tc, "added_tokens_decoder", preset);
      }
  }
}

// ------------------------------------------------------------------------------------------ generator

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

// splitmix64 output function.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Stream key of one tensor: depends on the seed and the name only.
uint64_t tensor_key(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ULL;  // FNV-1a 64
  for (unsigned char c : name) h = (h ^ c) * 0x100000001B3ULL;
  return mix64(h ^ mix64(seed + kGolden));
}

// out[j] = bf16(mean + stdev * z_j), z_j = Irwin-Hall sum of the four 16-bit fields of mix64(key + (j+1)·golden),
// centred and scaled to unit variance: z = (Σa − 131070)·√3/65536 (a_k + 1/2 uniform on (0, 65536)).
void fill_range(uint64_t key, float mean, float stdev, uint16_t* out, int64_t begin, int64_t end) {
  const float scale = stdev * static_cast<float>(std::sqrt(3.0) / 65536.0);
  for (int64_t j = begin; j < end; ++j) {
    const uint64_t w = mix64(key + (static_cast<uint64_t>(j) + 1) * kGolden);
    const int32_t s = static_cast<int32_t>((w & 0xFFFF) + ((w >> 16) & 0xFFFF) + ((w >> 32) & 0xFFFF) + (w >> 48));
    out[j] = f32_to_bf16(mean + static_cast<float>(s - 131070) * scale);
  }
}

void fill(uint64_t key, float mean, float stdev, std::span<uint16_t> out, int threads) {
  const auto n = static_cast<int64_t>(out.size());
  // Below ~1M values a thread start costs more than it saves.
  const int64_t t = std::clamp<int64_t>(n >> 20, 1, threads);
  if (t == 1) return fill_range(key, mean, stdev, out.data(), 0, n);
  std::vector<std::thread> pool;
  const int64_t chunk = (n + t - 1) / t;
  for (int64_t i = 1; i < t; ++i)
    pool.emplace_back(fill_range, key, mean, stdev, out.data(), i * chunk, std::min(n, (i + 1) * chunk));
  fill_range(key, mean, stdev, out.data(), 0, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

// ------------------------------------------------------------------------------------------ tensor list

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  float mean, stdev;
};

std::vector<TensorSpec> tensor_specs(const Shape& s) {
  const Preset& p = s.p;
  const int64_t H = p.d_model, qd = p.n_heads * p.head_dim, kvd = p.n_kv_heads * p.head_dim;
  constexpr float kNormNoise = 0.02f;
  std::vector<TensorSpec> v;
  auto linear = [&](std::string name, int64_t n_out, int64_t n_in) {
    v.push_back({std::move(name), {n_out, n_in}, 0.0f, static_cast<float>(1.0 / std::sqrt(double(n_in)))});
  };
  auto norm = [&](std::string name, int64_t n) { v.push_back({std::move(name), {n}, 1.0f, kNormNoise}); };
  auto mlp = [&](const std::string& pre, int64_t dff) {
    linear(pre + "gate_proj.weight", dff, H);
    linear(pre + "up_proj.weight", dff, H);
    linear(pre + "down_proj.weight", H, dff);
  };
  v.push_back({"model.embed_tokens.weight", {s.vocab, H}, 0.0f, static_cast<float>(1.0 / std::sqrt(double(H)))});
  for (int64_t l = 0; l < s.n_layers; ++l) {
    const std::string pre = fmt::format("model.layers.{}.", l);
    norm(pre + "input_layernorm.weight", H);
    linear(pre + "self_attn.q_proj.weight", qd, H);
    linear(pre + "self_attn.k_proj.weight", kvd, H);
    linear(pre + "self_attn.v_proj.weight", kvd, H);
    linear(pre + "self_attn.o_proj.weight", H, qd);
    norm(pre + "self_attn.query_layernorm.weight", p.head_dim);
    norm(pre + "self_attn.key_layernorm.weight", p.head_dim);
    norm(pre + "post_attention_layernorm.weight", H);
    if (p.moe) {
      linear(pre + "mlp.gate.wg.weight", s.n_experts, H);  // router, stored BF16 (SPEC 1.5 allows BF16 or F32)
      mlp(pre + "mlp.shared_mlp.", p.d_ff * p.n_shared);
      for (int64_t e = 0; e < s.n_experts; ++e) mlp(fmt::format("{}mlp.experts.{}.", pre, e), p.moe_d_ff);
    } else {
      mlp(pre + "mlp.", p.d_ff);
    }
  }
  norm("model.norm.weight", H);
  if (p.ocr) {
    // Vision tower and adapter (SPEC 1.5): weights ~ N(0, 1/n_in), biases ~ N(0, 0.02^2), LayerNorm/RMSNorm
    // weights ~ 1 + N(0, 0.02^2), position table and learned vectors ~ N(0, 1/width).
    const int64_t W = kVitWidth, P = kVitPatch, E = kVitMaxImage / kVitPatch;
    auto tensor = [&](std::string name, std::vector<int64_t> shape, float mean, float sd) {
      v.push_back({std::move(name), std::move(shape), mean, sd});
    };
    auto inv_sqrt = [](int64_t n) { return static_cast<float>(1.0 / std::sqrt(double(n))); };
    tensor("vit.embeddings.patch_embedding.weight", {W, 3, P, P}, 0.0f, inv_sqrt(3 * P * P));
    tensor("vit.embeddings.patch_embedding.bias", {W}, 0.0f, kNormNoise);
    tensor("vit.embeddings.position_embedding.weight", {E * E + 1, W}, 0.0f, inv_sqrt(W));
    for (int64_t l = 0; l < kVitLayers; ++l) {
      const std::string pre = fmt::format("vit.layers.{}.", l);
      for (const char* ln : {"input_layernorm", "post_attention_layernorm"}) {
        norm(pre + ln + ".weight", W);
        tensor(pre + ln + ".bias", {W}, 0.0f, kNormNoise);
      }
      for (const char* pr : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
        linear(pre + "self_attn." + pr + ".weight", W, W);
        tensor(pre + "self_attn." + pr + ".bias", {W}, 0.0f, kNormNoise);
      }
      linear(pre + "mlp.dense_h_to_4h.weight", kVitFf, W);
      tensor(pre + "mlp.dense_h_to_4h.bias", {kVitFf}, 0.0f, kNormNoise);
      linear(pre + "mlp.dense_4h_to_h.weight", W, kVitFf);
      tensor(pre + "mlp.dense_4h_to_h.bias", {W}, 0.0f, kNormNoise);
    }
    norm("vit.perceive.before_rms.weight", W);
    tensor("vit.perceive.proj.0.weight", {2 * W, W, 2, 2}, 0.0f, inv_sqrt(4 * W));
    tensor("vit.perceive.proj.0.bias", {2 * W}, 0.0f, kNormNoise);
    tensor("vit.perceive.proj.2.weight", {4 * W, 2 * W, 1, 1}, 0.0f, inv_sqrt(2 * W));
    tensor("vit.perceive.proj.2.bias", {4 * W}, 0.0f, kNormNoise);
    linear("vit.perceive.mlp.weight", H, 4 * W);
    tensor("vit.perceive.mlp.bias", {H}, 0.0f, kNormNoise);
    tensor("vit.perceive.image_newline", {4 * W}, 0.0f, inv_sqrt(4 * W));
    for (const char* e : {"image_begin", "image_end", "image_sep"})
      tensor(std::string("vit.perceive.") + e, {H}, 0.0f, inv_sqrt(H));
    norm("vit.perceive.after_rms.weight", H);
  }
  return v;
}

}  // namespace

std::vector<std::string> synth_presets() {
  std::vector<std::string> out;
  for (const auto& p : kPresets) out.emplace_back(p.name);
  return out;
}

ojson synth_config_json(const SynthOptions& opt) { return config_json(resolve(opt), opt); }

void synth_checkpoint(const SynthOptions& opt) {
  const Shape s = resolve(opt);
  ANGELSLIM_CHECK(!opt.out.empty(), InvalidInput, "synth: --out is required");
  if (!opt.tokenizer_dir.empty()) check_tokenizer(opt.tokenizer_dir, s.vocab, s.p.name);

  OutputDir out(opt.out, opt.overwrite);
  write_file_atomic(out.tmp() / "config.json", config_json(s, opt).dump(2) + "\n");
  write_file_atomic(out.tmp() / "generation_config.json", generation_config_json(s.p).dump(2) + "\n");
  if (s.p.ocr) {
    // HunyuanOCR v1.0 processor limits and CLIP normalisation (SPEC 3.8.1).
    const ojson pc = {{"min_pixels", 262144},
                      {"max_pixels", 4194304},
                      {"patch_size", kVitPatch},
                      {"merge_size", 2},
                      {"temporal_patch_size", 1},
                      {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
                      {"image_std", {0.26862954, 0.26130258, 0.27577711}}};
    write_file_atomic(out.tmp() / "preprocessor_config.json", pc.dump(2) + "\n");
  }
  if (!opt.tokenizer_dir.empty())
    for (const char* f : kTokenizerFiles) {
      const fs::path src = opt.tokenizer_dir / f;
      if (!fs::is_regular_file(src)) continue;
      std::error_code ec;
      fs::copy_file(src, out.tmp() / f, fs::copy_options::overwrite_existing, ec);
      ANGELSLIM_CHECK(!ec, IoError, "{}: cannot copy to {}: {}", src.string(), out.tmp().string(), ec.message());
    }

  const int threads =
      opt.threads > 0 ? opt.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const auto specs = tensor_specs(s);
  SafetensorsWriter writer(out.tmp(), opt.max_shard_bytes);
  Progress progress(fmt::format("synth {}", s.p.name), static_cast<int64_t>(specs.size()), "tensor", opt.progress);
  // Tensor i+1 is generated while tensor i is written (the write is a kernel copy that takes one core): peak
  // memory is the two largest tensors (the embedding and an MLP matrix), never the model.
  std::vector<uint16_t> ready, next;
  auto generate = [&](const TensorSpec& t, std::vector<uint16_t>& buf) {
    int64_t numel = 1;
    for (auto d : t.shape) numel *= d;
    buf.resize(static_cast<std::size_t>(numel));
    fill(tensor_key(opt.seed, t.name), t.mean, t.stdev, buf, threads);
  };
  generate(specs[0], ready);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    std::future<void> pending;
    if (i + 1 < specs.size())
      pending = std::async(std::launch::async, generate, std::cref(specs[i + 1]), std::ref(next));
    // The destructor of `pending` waits, so an exception from add() cannot leave the generator running.
    writer.add(specs[i].name, DType::kBF16, specs[i].shape,
               std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(ready.data()), ready.size() * 2));
    progress.advance(1, specs[i].name);
    if (pending.valid()) pending.get();
    std::swap(ready, next);
  }
  writer.finish();
  progress.finish();
  out.commit();
}

}  // namespace angelslim
