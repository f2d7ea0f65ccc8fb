// Random-weight checkpoints with the real Hunyuan shapes (`angelslim synth`): config.json (SPEC 1.3/1.4 released
// configurations), BF16 tensors with the SPEC 1.5 names and shapes, generation_config.json, optional tokenizer files.
// Used for timing and memory runs at full scale without the released weights.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace angelslim {

struct SynthOptions {
  // One of synth_presets(): hunyuan-0.5b, hunyuan-1.8b, hunyuan-4b, hunyuan-7b, hunyuan-a13b, hunyuan-ocr
  // (hunyuan-ocr: the 0.5B-shaped LLM plus the 27-block vision tower and adapter, v1.0 names, and a
  // preprocessor_config.json; --layers applies to the LLM only).
  std::string preset;
  int64_t layers = -1;                   // num_hidden_layers; -1: the preset's count
  // Optional: copy tokenizer.json, tokenizer_config.json, chat_template.jinja, hy.tiktoken, tokenization_hy.py,
  // special_tokens_map.json, generation_config.json (replacing the generated one) from here, after checking that
  // every token id of tokenizer.json / hy.tiktoken (+210 specials) / added_tokens_decoder is < vocab_size.
  std::filesystem::path tokenizer_dir;
  std::filesystem::path out;             // output directory; must not exist or be empty unless overwrite
  uint64_t seed = 0;                     // same seed -> byte-identical output
  bool overwrite = false;                // replace a non-empty existing `out`
  // Test-size overrides (-1: the preset's value). `experts` also caps moe_topk at the expert count.
  int64_t vocab = -1;                    // vocab_size
  int64_t experts = -1;                  // num_experts (MoE presets only; InvalidInput otherwise)
  uint64_t max_shard_bytes = 5000000000ULL;  // safetensors shard limit (a larger tensor gets its own shard)
  int threads = 0;                       // generator threads; 0 = all cores (output does not depend on it)
  bool progress = true;                  // progress bar on stderr
};

// Names of all presets, in size order.
std::vector<std::string> synth_presets();

// The config.json that synth_checkpoint writes for these options (no files touched).
// Throws InvalidInput for an unknown preset or a bad override.
nlohmann::ordered_json synth_config_json(const SynthOptions& opt);

// Writes a complete checkpoint into opt.out (built in a temporary sibling directory, renamed at the end).
// Tensors (all BF16, generated and written tensor by tensor: peak memory is the two largest tensors, the
// embedding and one MLP matrix, as the next tensor is generated while the previous one is written):
//   embeddings [V, H] ~ N(0, 1/H) (tied LM head: logits = h·Eᵀ stay O(1) for unit-RMS h);
//   linears [n_out, n_in] ~ N(0, 1/n_in) (unit-RMS input -> unit-RMS output); MoE router likewise;
//   RMSNorm weights ~ 1 + N(0, 0.02²).
// "N" is the Irwin-Hall sum of four uniforms, rescaled to the stated variance (bounded at ±2√3 σ; excess
// kurtosis −0.3); each tensor's values depend only on (seed, tensor name), never on thread count or order.
void synth_checkpoint(const SynthOptions& opt);

}  // namespace angelslim
