// `angelslim synth`: preset configs against the SPEC 1.4 released-configuration table, tensor names/shapes/dtypes
// (SPEC 1.5) read back through the model loader, weight statistics, a decoder-layer forward, determinism, tokenizers.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/model/model_config.h"
#include "angelslim/model/synth.h"

namespace angelslim {
namespace {

namespace fs = std::filesystem;
const std::string kData = ANGELSLIM_TEST_DATA;
constexpr int64_t kSmallVocab = 512;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / fmt::format("synth_test_{}_{}", ::getpid(), counter_++);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

SynthOptions small(const std::string& preset, const fs::path& out) {
  SynthOptions o;
  o.preset = preset;
  o.layers = 1;
  o.vocab = kSmallVocab;
  o.out = out;
  o.progress = false;
  if (preset == "hunyuan-a13b") o.experts = 2;  // 64 full-width experts would be 4.8 GB per layer
  return o;
}

ModelConfig parse(const SynthOptions& o) {
  return parse_model_config(nlohmann::json::parse(synth_config_json(o).dump()), o.preset);
}

// The SPEC 1.4 "Released configurations" table, typed in again here (not taken from the code under test).
struct Expected {
  const char* preset;
  int64_t V, H, I, L, nH, nKV, D, E, top_k;
};
constexpr Expected kTable[] = {
    {"hunyuan-0.5b", 120818, 1024, 3584, 24, 16, 8, 128, 0, 0},
    {"hunyuan-1.8b", 120818, 2048, 6144, 32, 16, 4, 128, 0, 0},
    {"hunyuan-4b", 120818, 3072, 8192, 32, 32, 8, 128, 0, 0},
    {"hunyuan-7b", 128167, 4096, 14336, 32, 32, 8, 128, 0, 0},
    {"hunyuan-a13b", 128167, 4096, 3072, 32, 32, 8, 128, 64, 8},
};

TEST(Synth, PresetConfigsMatchTheReleasedTable) {
  EXPECT_EQ(synth_presets(), (std::vector<std::string>{"hunyuan-0.5b", "hunyuan-1.8b", "hunyuan-4b", "hunyuan-7b",
                                                       "hunyuan-a13b", "hunyuan-ocr"}));
  for (const auto& e : kTable) {
    SCOPED_TRACE(e.preset);
    SynthOptions o;
    o.preset = e.preset;
    const ModelConfig c = parse(o);
    EXPECT_EQ(c.family, e.E ? ModelFamily::kMoE : ModelFamily::kDense);
    EXPECT_EQ(c.architecture, e.E ? "HunYuanMoEV1ForCausalLM" : "HunYuanDenseV1ForCausalLM");
    EXPECT_EQ(c.model_type, e.E ? "hunyuan_v1_moe" : "hunyuan_v1_dense");
    EXPECT_EQ(c.vocab_size, e.V);
    EXPECT_EQ(c.d_model, e.H);
    EXPECT_EQ(c.d_ff, e.I);
    EXPECT_EQ(c.n_layers, e.L);
    EXPECT_EQ(c.n_heads, e.nH);
    EXPECT_EQ(c.n_kv_heads, e.nKV);
    EXPECT_EQ(c.head_dim, e.D);
    EXPECT_EQ(c.rope_kind, "dynamic");
    EXPECT_EQ(c.rope_alpha, 1000.0);
    EXPECT_EQ(c.rope_theta, 10000.0);
    EXPECT_EQ(c.rope_base(), 11158840.0f);  // SPEC 3.3, D = 128
    EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_TRUE(c.use_qk_norm);
    EXPECT_EQ(c.torch_dtype, "bfloat16");
    if (e.E) {
      EXPECT_EQ(c.n_experts, e.E);
      EXPECT_EQ(c.moe_topk, std::vector<int64_t>(static_cast<std::size_t>(e.L), e.top_k));
      EXPECT_EQ(c.moe_d_ff, std::vector<int64_t>(static_cast<std::size_t>(e.L), 3072));
      EXPECT_EQ(c.shared_d_ff(0), 3072);  // one shared expert of width I
    }
  }
  // Overrides: layers, vocab, experts (top-k capped at the expert count).
  SynthOptions o;
  o.preset = "hunyuan-a13b";
  o.layers = 2;
  o.vocab = 1000;
  o.experts = 4;
  const ModelConfig c = parse(o);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.vocab_size, 1000);
  EXPECT_EQ(c.n_experts, 4);
  EXPECT_EQ(c.moe_topk, (std::vector<int64_t>{4, 4}));
}

TEST(Synth, BadPresetsAndOptions) {
  SynthOptions o;
  o.out = "/nonexistent/never";
  o.progress = false;
  o.preset = "hunyuan-70b";
  try {
    synth_checkpoint(o);
    FAIL();
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("hunyuan-70b"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("hunyuan-a13b"), std::string::npos) << e.what();
  }
  o.preset = "hunyuan-0.5b";
  o.experts = 4;
  EXPECT_THROW(synth_checkpoint(o), InvalidInput);  // experts override on a dense preset
  o.experts = -1;
  o.layers = 0;
  EXPECT_THROW(synth_checkpoint(o), InvalidInput);
  EXPECT_FALSE(fs::exists("/nonexistent/never"));
}

// Reads every tensor of `dir` and checks the SPEC 1.5 name set, BF16 dtype and shapes.
void check_tensors(const TensorStore& st, const ModelConfig& c) {
  const int64_t H = c.d_model, qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
  std::map<std::string, std::vector<int64_t>> want;
  want["model.embed_tokens.weight"] = {c.vocab_size, H};
  want["model.norm.weight"] = {H};
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    want[p + "input_layernorm.weight"] = {H};
    want[p + "post_attention_layernorm.weight"] = {H};
    want[p + "self_attn.q_proj.weight"] = {qd, H};
    want[p + "self_attn.k_proj.weight"] = {kvd, H};
    want[p + "self_attn.v_proj.weight"] = {kvd, H};
    want[p + "self_attn.o_proj.weight"] = {H, qd};
    want[p + "self_attn.query_layernorm.weight"] = {c.head_dim};
    want[p + "self_attn.key_layernorm.weight"] = {c.head_dim};
    auto mlp = [&](const std::string& m, int64_t dff) {
      want[m + "gate_proj.weight"] = {dff, H};
      want[m + "up_proj.weight"] = {dff, H};
      want[m + "down_proj.weight"] = {H, dff};
    };
    if (c.family == ModelFamily::kMoE) {
      want[p + "mlp.gate.wg.weight"] = {c.n_experts, H};
      mlp(p + "mlp.shared_mlp.", c.shared_d_ff(l));
      for (int64_t e = 0; e < c.n_experts; ++e) mlp(fmt::format("{}mlp.experts.{}.", p, e), c.moe_d_ff[0]);
    } else {
      mlp(p + "mlp.", c.d_ff);
    }
  }
  std::set<std::string> got;
  for (const auto& [name, view] : st.all()) {
    got.insert(name);
    auto it = want.find(name);
    ASSERT_NE(it, want.end()) << "unexpected tensor " << name;
    EXPECT_EQ(view->shape, it->second) << name;
    EXPECT_EQ(view->dtype, DType::kBF16) << name;
  }
  EXPECT_EQ(got.size(), want.size());
}

struct Stats {
  double mean, std, kurtosis_excess, max_abs;
};
Stats stats(const std::vector<float>& v) {
  double s = 0, s2 = 0, s4 = 0, mx = 0;
  for (float x : v) s += x;
  const double mean = s / double(v.size());
  for (float x : v) {
    const double d = x - mean;
    s2 += d * d;
    s4 += d * d * d * d;
    mx = std::max(mx, std::abs(d));
  }
  const double var = s2 / double(v.size());
  return {mean, std::sqrt(var), s4 / double(v.size()) / (var * var) - 3.0, mx};
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s / double(v.size()));
}

// Synthesizes one layer of `preset` (small vocab), loads it back and runs the decoder layer.
void roundtrip(const std::string& preset) {
  SCOPED_TRACE(preset);
  TempDir tmp;
  const fs::path out = tmp.path() / "ckpt";
  synth_checkpoint(small(preset, out));
  EXPECT_TRUE(fs::exists(out / "config.json"));
  EXPECT_TRUE(fs::exists(out / "generation_config.json"));
  for (const auto& e : fs::directory_iterator(tmp.path()))  // temporary directory renamed away
    EXPECT_EQ(e.path().filename(), "ckpt");

  const ModelConfig c = load_model_config(out);
  EXPECT_EQ(c.n_layers, 1);
  EXPECT_EQ(c.vocab_size, kSmallVocab);
  const TensorStore st(out);
  check_tensors(st, c);

  // Weight statistics against the documented init: linears std 1/sqrt(n_in), norms 1 + 0.02 noise.
  // Tolerances: >= 2M samples for q_proj (relative std error of the std < 0.1%); 2% covers bf16 rounding (2^-9 rel).
  const auto q = st.get("model.layers.0.self_attn.q_proj.weight").to_f32();
  const Stats sq = stats(q);
  const double want_std = 1.0 / std::sqrt(double(c.d_model));
  EXPECT_NEAR(sq.std, want_std, 0.02 * want_std);
  EXPECT_NEAR(sq.mean, 0.0, 0.01 * want_std);
  // Irwin-Hall(4): bounded at 2*sqrt(3) sigma, excess kurtosis -6/(5*4) = -0.3 (a Gaussian would give 0).
  EXPECT_LE(sq.max_abs, 2.0 * std::sqrt(3.0) * want_std * 1.01);
  EXPECT_NEAR(sq.kurtosis_excess, -0.3, 0.03);
  const auto n = st.get("model.layers.0.input_layernorm.weight").to_f32();
  const Stats sn = stats(n);
  EXPECT_NEAR(sn.mean, 1.0, 0.005);       // 1024..4096 samples of std 0.02: std error <= 0.0007
  EXPECT_NEAR(sn.std, 0.02, 0.004);       // bf16 step near 1 is 2^-8..2^-7, adds ~0.003 in quadrature
  const auto emb = st.get("model.embed_tokens.weight").to_f32();
  EXPECT_NEAR(stats(emb).std, 1.0 / std::sqrt(double(c.d_model)), 0.03 / std::sqrt(double(c.d_model)));

  const DecoderLayer L = load_decoder_layer(st, c, 0);
  const int64_t n_tok = 8;
  std::vector<float> x(static_cast<std::size_t>(n_tok * c.d_model));
  uint64_t r = 12345;
  for (auto& v : x) {  // uniform(-sqrt3, sqrt3): unit RMS, rounded to bf16 as stored activations are
    r = r * 6364136223846793005ULL + 1442695040888963407ULL;
    v = round_bf16(static_cast<float>((double(r >> 11) / 9007199254740992.0 * 2.0 - 1.0) * std::sqrt(3.0)));
  }
  const std::vector<float> x0 = x;
  ForwardOptions fo;
  fo.round_bf16 = true;
  decoder_layer_forward(c, L, rope_inv_freq(c), x.data(), n_tok, 0, fo);
  for (float v : x) ASSERT_TRUE(std::isfinite(v));
  std::vector<float> delta(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) delta[i] = x[i] - x0[i];
  const double in = rms(x0), outr = rms(x), dr = rms(delta);
  EXPECT_GT(outr, 0.1 * in);
  EXPECT_LT(outr, 10.0 * in);
  // The layer's own contribution (attention + MLP) is O(1) too: neither vanishing nor exploding.
  EXPECT_GT(dr, 0.1 * in);
  EXPECT_LT(dr, 10.0 * in);
}

TEST(Synth, Dense05b) { roundtrip("hunyuan-0.5b"); }
TEST(Synth, Dense18b) { roundtrip("hunyuan-1.8b"); }
TEST(Synth, Dense4b) { roundtrip("hunyuan-4b"); }
TEST(Synth, Dense7b) { roundtrip("hunyuan-7b"); }
TEST(Synth, MoeA13b) { roundtrip("hunyuan-a13b"); }

std::map<std::string, std::string> dir_bytes(const fs::path& d) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::directory_iterator(d)) m[e.path().filename().string()] = read_file(e.path());
  return m;
}

TEST(Synth, SameSeedSameBytesAcrossThreadCounts) {
  TempDir tmp;
  SynthOptions a = small("hunyuan-0.5b", tmp.path() / "a");
  a.seed = 7;
  a.threads = 1;
  SynthOptions b = a;
  b.out = tmp.path() / "b";
  b.threads = 3;
  SynthOptions c = a;
  c.out = tmp.path() / "c";
  c.seed = 8;
  synth_checkpoint(a);
  synth_checkpoint(b);
  synth_checkpoint(c);
  const auto ba = dir_bytes(a.out), bb = dir_bytes(b.out), bc = dir_bytes(c.out);
  EXPECT_EQ(ba, bb);
  ASSERT_EQ(ba.count("model.safetensors"), 1u);
  ASSERT_EQ(bc.count("model.safetensors"), 1u);
  EXPECT_EQ(ba.at("model.safetensors").size(), bc.at("model.safetensors").size());
  EXPECT_NE(ba.at("model.safetensors"), bc.at("model.safetensors"));
  // Every tensor differs between seeds (not just one): compare tensor by tensor.
  const TensorStore sa(a.out), sc(c.out);
  for (const auto& [name, v] : sa.all()) {
    const TensorView& w = sc.get(name);
    ASSERT_EQ(v->nbytes, w.nbytes);
    EXPECT_NE(0, std::memcmp(v->data, w.data, v->nbytes)) << name;
  }
  // Different tensors of one checkpoint are different streams (the key includes the name).
  const TensorView& k = sa.get("model.layers.0.self_attn.k_proj.weight");
  const TensorView& v = sa.get("model.layers.0.self_attn.v_proj.weight");
  EXPECT_NE(0, std::memcmp(k.data, v.data, k.nbytes));
}

TEST(Synth, ShardsAndIndex) {
  TempDir tmp;
  SynthOptions o = small("hunyuan-0.5b", tmp.path() / "s");
  o.layers = 2;
  o.max_shard_bytes = 16u << 20;  // 16 MiB: a 0.5B layer is ~35 MB
  synth_checkpoint(o);
  EXPECT_TRUE(fs::exists(o.out / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(o.out / "model.safetensors"));
  const TensorStore st(o.out);
  EXPECT_GT(st.files().size(), 2u);
  check_tensors(st, load_model_config(o.out));
}

TEST(Synth, RefusesNonEmptyOutUnlessOverwrite) {
  TempDir tmp;
  const fs::path out = tmp.path() / "o";
  fs::create_directories(out);
  write_file_atomic(out / "keep.txt", "x");
  SynthOptions o = small("hunyuan-0.5b", out);
  EXPECT_THROW(synth_checkpoint(o), InvalidInput);
  EXPECT_TRUE(fs::exists(out / "keep.txt"));
  o.overwrite = true;
  synth_checkpoint(o);
  EXPECT_FALSE(fs::exists(out / "keep.txt"));
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
}

TEST(Synth, CopiesTokenizerFiles) {
  TempDir tmp;
  const fs::path tok = kData + "/fixtures/hy-dense-tiny";  // tokenizer.json with ids up to 16383
  SynthOptions o = small("hunyuan-0.5b", tmp.path() / "t");
  o.tokenizer_dir = tok;
  o.vocab = 16384;
  synth_checkpoint(o);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"})
    EXPECT_EQ(read_file(o.out / f), read_file(tok / f)) << f;
  EXPECT_FALSE(fs::exists(o.out / "hy.tiktoken"));

  // One id short: the highest added token (16383) no longer fits.
  o.vocab = 16383;
  o.out = tmp.path() / "t2";
  try {
    synth_checkpoint(o);
    FAIL();
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("16383"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(o.out));
  o.tokenizer_dir = tmp.path() / "missing";
  EXPECT_THROW(synth_checkpoint(o), InvalidInput);
}

TEST(Synth, TiktokenVocabularyCheck) {
  // hy.tiktoken: 127957 ranked tokens + 210 specials = 128167 ids (SPEC 1.6.2). The check runs before the output
  // directory is touched, so a non-empty --out tells a passing check (then "not empty") from a failing one.
  TempDir tmp;
  const fs::path out = tmp.path() / "busy";
  fs::create_directories(out);
  write_file_atomic(out / "x", "x");
  SynthOptions o = small("hunyuan-a13b", out);
  o.tokenizer_dir = kData + "/tokenizers/hy-a13b";
  o.vocab = 128167;
  try {
    synth_checkpoint(o);
    FAIL();
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("not empty"), std::string::npos) << e.what();
  }
  o.vocab = 128166;
  try {
    synth_checkpoint(o);
    FAIL();
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("hy.tiktoken"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace angelslim
