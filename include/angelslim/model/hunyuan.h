// Hunyuan dense v1 / MoE v1 decoder (SPEC 3.2-3.7) on the CPU reference ops, with observer hooks on every
// linear input so the calibration engine can collect statistics without owning model code.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "angelslim/io/safetensors.h"
#include "angelslim/model/model_config.h"

namespace angelslim {

enum class LinearKind { kQ, kK, kV, kO, kGate, kUp, kDown };
const char* linear_kind_name(LinearKind k);  // "q_proj", ...

// Which linear of a decoder layer: expert -1 = attention / dense MLP / shared expert (shared = true).
struct LinearId {
  int64_t layer = 0;
  LinearKind kind = LinearKind::kQ;
  int64_t expert = -1;
  bool shared = false;
  // Name relative to the layer, e.g. "self_attn.q_proj", "mlp.experts.3.up_proj", "mlp.shared_mlp.down_proj".
  std::string rel_name() const;
  // Full HF module name, e.g. "model.layers.2.self_attn.q_proj".
  std::string full_name() const { return "model.layers." + std::to_string(layer) + "." + rel_name(); }
};

// Every linear of layer `layer` in forward order: q, k, v, o, then gate, up, down of the dense MLP, or of
// the shared expert followed by each routed expert.
std::vector<LinearId> layer_linear_ids(const ModelConfig& cfg, int64_t layer);

// Runtime activation quantization applied to a linear's input (what the serving engine does).
enum class ActQuant { kNone, kFp8Static, kFp8Dynamic };

struct Linear {
  int64_t n_out = 0, n_in = 0;
  std::vector<float> w;     // [n_out, n_in] fp32 (dequantized if the checkpoint is quantized)
  std::vector<float> bias;  // [n_out] or empty
  ActQuant act = ActQuant::kNone;
  float input_scale = 0.0f;  // for kFp8Static
};

// y [n, n_out] = lin(x [n, n_in]) with the linear's runtime activation quantization (FP8 input scale); rb rounds y
// to bf16. scratch: reused buffer for the quantized input.
void apply_linear(const Linear& lin, const float* x, int64_t n, float* y, bool rb, std::vector<float>& scratch);

struct Mlp {
  Linear gate, up, down;
};

struct DecoderLayer {
  int64_t index = 0;
  std::vector<float> input_norm, post_norm;  // [d_model]
  std::vector<float> q_norm, k_norm;         // [head_dim]
  Linear q, k, v, o;
  bool is_moe = false;
  Mlp mlp;                    // dense MLP, or the shared expert of a MoE layer (when has_shared)
  bool has_shared = false;
  std::vector<float> router;  // [n_experts, d_model] fp32 (MoE)
  int64_t top_k = 0;
  std::vector<Mlp> experts;
};

// Receives each linear's input just before it is applied. x: [n_tokens, n_in] fp32 row-major.
// For routed experts, x holds only the tokens routed to that expert, and `token_index` their row indices
// in the layer's token batch (nullptr otherwise).
class LinearObserver {
 public:
  virtual ~LinearObserver() = default;
  virtual void observe(const LinearId& id, const float* x, int64_t n_tokens, int64_t n_in,
                       const int64_t* token_index) = 0;
  // Router decision of a MoE layer: for each token, top-k expert indices (row-major [n_tokens, k]).
  virtual void routed(int64_t /*layer*/, const int32_t* /*experts*/, int64_t /*n_tokens*/, int64_t /*k*/) {}
};

// Where an observing pass may stop: once the inputs an algorithm's current stage needs have been observed,
// the rest of the layer is not computed (the layer's outputs are then not produced).
enum class StopAfter { kNone, kQkvInput, kOInput, kMlpInput };

struct ForwardOptions {
  bool round_bf16 = false;  // BF16 storage points (SPEC 3.1); false = fp32 reference mode
  StopAfter stop_after = StopAfter::kNone;
  // OCR: XD-RoPE positions [n_tokens, 4] (p, w, h, t) of the tokens of this call (SPEC 3.8.4); null = plain RoPE
  // at the sequence index. With seq_offsets, rows follow the ragged batch (each sample's rows start at its index 0).
  const int32_t* xd_pos = nullptr;
};

// Key/value cache of one layer for incremental decoding: [n_tokens, n_kv_heads * head_dim] each.
struct KvCache {
  std::vector<float> k, v;
  int64_t n = 0;
};

// Precomputed RoPE inverse frequencies for a config: [head_dim/2].
std::vector<float> rope_inv_freq(const ModelConfig& cfg);

// Runs one decoder layer in place on x [n_tokens, d_model] (one sequence at positions pos0 ...).
// With `cache`, keys/values are appended and attention sees all cached positions.
// With `seq_offsets` (size S+1, seq_offsets[0] = 0, last = n_tokens), x holds S sequences back to back, each at
// positions 0.. with its own causal attention (a ragged batch: GEMMs run over all tokens at once); pos0 must be
// 0 and cache null then.
void decoder_layer_forward(const ModelConfig& cfg, const DecoderLayer& layer, const std::vector<float>& inv_freq,
                           float* x, int64_t n_tokens, int64_t pos0, const ForwardOptions& opt,
                           LinearObserver* observer = nullptr, KvCache* cache = nullptr,
                           std::span<const int64_t> seq_offsets = {});

// The two halves of a decoder layer, for algorithms that evaluate sub-blocks (AWQ):
// attention_block: a = input_layernorm(x) [n, d_model] -> out = o_proj(attention(...)) [n, d_model] (no residual).
void attention_block(const ModelConfig& cfg, const DecoderLayer& layer, const std::vector<float>& inv_freq,
                     const float* a, int64_t n_tokens, int64_t pos0, const ForwardOptions& opt, LinearObserver* observer,
                     KvCache* cache, float* out, std::span<const int64_t> seq_offsets = {});
// ffn_block: m = post_attention_layernorm(h) [n, d_model] -> out = MLP(m) or MoE(m) [n, d_model] (no residual).
void ffn_block(const ModelConfig& cfg, const DecoderLayer& layer, const float* m, int64_t n_tokens,
               const ForwardOptions& opt, LinearObserver* observer, float* out);

// Reads the weights of one layer (dequantizing quantized formats to fp32).
DecoderLayer load_decoder_layer(const TensorStore& store, const ModelConfig& cfg, int64_t layer);

// A whole model for evaluation and generation: all layers resident.
class HunyuanModel {
 public:
  explicit HunyuanModel(const std::filesystem::path& dir, const ForwardOptions& opt = {});
  const ModelConfig& config() const { return cfg_; }
  const TensorStore& store() const { return *store_; }

  // Token embeddings: out [n, d_model].
  void embed(const int32_t* ids, int64_t n, float* out) const;
  // Final norm + LM head: h [n, d_model] -> logits [n, vocab].
  void head(const float* h, int64_t n, float* logits) const;
  // Final hidden states (before the final norm) [n, d_model] for one sequence of token ids, or for several
  // sequences back to back when seq_offsets is given (see decoder_layer_forward).
  std::vector<float> hidden(const int32_t* ids, int64_t n, std::span<const int64_t> seq_offsets = {}) const;
  // Logits [n, vocab] for one sequence of token ids (positions 0..n-1).
  std::vector<float> logits(const int32_t* ids, int64_t n) const;
  // Per-token NLL of ids[1..n-1] given the prefix: [n-1].
  std::vector<float> nll(const int32_t* ids, int64_t n) const;
  // The same for `count` independent sequences of `len` tokens stored back to back, run as one ragged batch:
  // returns count * (len - 1) values, sequence by sequence.
  std::vector<float> nll_batch(const int32_t* ids, int64_t count, int64_t len) const;

  // Incremental decoding: feeds `ids` after the cached positions and returns the logits of the last token.
  struct Session {
    std::vector<KvCache> caches;
    int64_t n = 0;
  };
  std::vector<float> step(Session& s, const int32_t* ids, int64_t n) const;

  // OCR: the same from input embeddings x [n, d_model] (image embeddings already scattered) with XD-RoPE positions
  // xd_pos [n, 4] (null: plain positions). hidden_embeds returns the final hidden states (before the final norm);
  // step_embeds feeds them after the cached positions and returns the logits of the last token.
  std::vector<float> hidden_embeds(std::vector<float> x, int64_t n, const int32_t* xd_pos) const;
  std::vector<float> step_embeds(Session& s, std::vector<float> x, int64_t n, const int32_t* xd_pos) const;

 private:
  ModelConfig cfg_;
  ForwardOptions opt_;
  std::unique_ptr<TensorStore> store_;
  std::vector<float> embed_;    // [vocab, d_model]
  std::vector<float> lm_head_;  // [vocab, d_model], empty when tied
  std::vector<float> final_norm_;
  std::vector<float> inv_freq_;
  std::vector<DecoderLayer> layers_;
};

}  // namespace angelslim
