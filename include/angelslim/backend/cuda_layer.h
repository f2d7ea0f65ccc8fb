// One Hunyuan decoder layer resident on the GPU (issue 6): uploads a DecoderLayer's weights (fp32 or bf16) and runs
// the math of decoder_layer_forward / attention_block / ffn_block (SPEC 3.2-3.6) on device activations, with an
// optional device-side observer of every linear's input. Checked against the CPU layer in tests/gpu/.
#pragma once
#include <cstdint>
#include <vector>

#include "angelslim/backend/cuda_ops.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/model/model_config.h"

namespace angelslim::cuda {

// How linear weights live on the device.
enum class DeviceWeights {
  kF32,   // fp32 weights, cuBLAS SGEMM: both forward modes (bf16 mode rounds at the SPEC 3.1 storage points)
  kBF16,  // bf16 weights (RNE from fp32), BF16-input GEMMs with FP32 accumulation: bf16 mode only, half the memory
};

// Receives each linear's input on the device, just before the linear runs, on ctx.stream() (enqueue work there or
// synchronise the context before reading). x: device [n_tokens, n_in] fp32 row-major, valid during the call only.
// token_index: device int64 [n_tokens], the rows in the layer's batch of a routed expert's tokens (nullptr otherwise).
class CudaLinearObserver {
 public:
  virtual ~CudaLinearObserver() = default;
  virtual void observe(CudaContext& ctx, const LinearId& id, const float* x, int64_t n_tokens, int64_t n_in,
                       const int64_t* token_index) = 0;
  // Router decision of a MoE layer: experts device int32 [n_tokens, k] (descending probability).
  virtual void routed(CudaContext& /*ctx*/, int64_t /*layer*/, const int32_t* /*experts*/, int64_t /*n_tokens*/,
                      int64_t /*k*/) {}
};

// Device key/value cache of one layer for incremental decoding: k, v [capacity, n_kv_heads·head_dim] fp32.
class CudaKvCache {
 public:
  CudaKvCache(int64_t capacity, int64_t kv_dim);
  int64_t size() const { return n_; }
  int64_t capacity() const { return capacity_; }
  int64_t kv_dim() const { return kv_dim_; }
  float* k() { return k_.data(); }
  float* v() { return v_.data(); }
  void clear() { n_ = 0; }
  // Used by CudaDecoderLayer: reserves n more rows (InvalidInput past capacity) and returns the old size.
  int64_t append(int64_t n);

 private:
  DeviceBuffer<float> k_, v_;
  int64_t capacity_ = 0, kv_dim_ = 0, n_ = 0;
};

class CudaDecoderLayer {
 public:
  // Uploads the layer (synchronously). ctx must outlive the layer. inv_freq: [head_dim/2] (rope_inv_freq(cfg)).
  // Throws Unsupported for shapes the kernels do not handle (head_dim other than 64/128, > 256 experts).
  CudaDecoderLayer(CudaContext& ctx, const ModelConfig& cfg, const DecoderLayer& layer,
                   const std::vector<float>& inv_freq, DeviceWeights weights);
  CudaDecoderLayer(const CudaDecoderLayer&) = delete;
  CudaDecoderLayer& operator=(const CudaDecoderLayer&) = delete;

  // decoder_layer_forward on the device, in place on x: device [n_tokens, d_model] fp32, one sequence; RoPE positions
  // pos0 + t. With a cache (as on the CPU) the new keys/values are appended and attention also sees the cached ones
  // (callers pass pos0 = cache->size()). InvalidInput when opt.round_bf16 is false and the weights are kBF16.
  void forward(float* x, int64_t n_tokens, int64_t pos0, const ForwardOptions& opt,
               CudaLinearObserver* observer = nullptr, CudaKvCache* cache = nullptr);
  // a = input_layernorm(x): device [n, d_model] -> out = o_proj(attention(...)) device [n, d_model] (no residual).
  void attention_block(const float* a, int64_t n_tokens, int64_t pos0, const ForwardOptions& opt,
                       CudaLinearObserver* observer, CudaKvCache* cache, float* out);
  // m = post_attention_layernorm(h): device [n, d_model] -> out = MLP(m) or MoE(m) device [n, d_model].
  void ffn_block(const float* m, int64_t n_tokens, const ForwardOptions& opt, CudaLinearObserver* observer, float* out);

  DeviceWeights weights() const { return weights_; }
  // kBF16 only: number of weight values that were not bf16-representable and were rounded on upload.
  int64_t n_weights_rounded() const { return n_rounded_; }
  // Bytes of weights held on the device.
  std::size_t weight_bytes() const { return weight_bytes_; }

 private:
  struct Lin {
    int64_t n_out = 0, n_in = 0;
    DeviceBuffer<float> w32;     // [n_out, n_in] (kF32)
    DeviceBuffer<uint16_t> w16;  // [n_out, n_in] bf16 (kBF16)
    DeviceBuffer<float> bias;    // [n_out] or empty
    ActQuant act = ActQuant::kNone;
    DeviceBuffer<float> input_scale;  // [1] for kFp8Static
  };
  struct DevMlp {
    Lin gate, up, down;
  };

  Lin upload_linear(const Linear& l, const char* what);
  DevMlp upload_mlp(const Mlp& m, const char* what);
  DeviceBuffer<float> upload_vec(const std::vector<float>& v);
  void check_mode(const ForwardOptions& opt) const;
  void ensure_scratch(int64_t n_tokens);
  // y [n, n_out] = linear(x [n, n_in]) with its activation quantization, rounded in bf16 mode.
  void apply_linear(const Lin& lin, const float* x, int64_t n, float* y, bool rb);
  void mlp_forward(const DevMlp& mlp, const float* m, int64_t n, float* out, bool rb, CudaLinearObserver* obs,
                   int64_t expert, bool shared, const int64_t* token_index);
  void moe_forward(const float* m, int64_t n, float* out, bool rb, CudaLinearObserver* obs);
  void observe(CudaLinearObserver* obs, LinearKind kind, int64_t expert, bool shared, const float* x, int64_t n,
               int64_t n_in, const int64_t* token_index);

  CudaContext& ctx_;
  ModelConfig cfg_;
  DeviceWeights weights_;
  int64_t index_ = 0;
  int64_t n_rounded_ = 0;
  std::size_t weight_bytes_ = 0;
  DeviceBuffer<float> inv_freq_, input_norm_, post_norm_, q_norm_, k_norm_;
  Lin q_, k_, v_, o_;
  bool is_moe_ = false, has_shared_ = false;
  int64_t top_k_ = 0;
  DevMlp mlp_;                  // dense MLP or the shared expert
  DeviceBuffer<float> router_;  // [n_experts, d_model] fp32 (the router runs in fp32 in both modes)
  std::vector<DevMlp> experts_;

  // Scratch, grown on demand.
  DeviceBuffer<float> a_, o_buf_, q_buf_, k_buf_, v_buf_, attn_, g_, u_, xq_, logits_, wts_, slot_w_, xin_, y_, shared_;
  DeviceBuffer<uint16_t> x16_;
  DeviceBuffer<float> amax_, dyn_scale_;
  DeviceBuffer<int32_t> top_;
  DeviceBuffer<int64_t> offsets_, token_index_;
  std::vector<int64_t> offsets_host_;
};

}  // namespace angelslim::cuda
