// One Hunyuan decoder layer resident on the GPU (issue 6): uploads a DecoderLayer's weights (fp32 or bf16) and runs
// the math of decoder_layer_forward / attention_block / ffn_block (SPEC 3.2-3.6) on device activations, with an
// optional device-side observer of every linear's input. Checked against the CPU layer in tests/gpu/.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "angelslim/backend/cuda_ops.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/model/model_config.h"

namespace angelslim::cuda {

// How linear weights live on the device.
enum class DeviceWeights {
  kF32,   // fp32 weights, cuBLAS SGEMM: both forward modes (bf16 mode rounds at the SPEC 3.1 storage points)
  kBF16,  // bf16 weights (RNE from fp32), BF16-input GEMMs with FP32 accumulation: bf16 mode only, half the memory
  // Each weight as the exact sum of up to three bf16 terms (split_bf16_terms), one BF16 GEMM per term that any
  // element needs: a bf16 checkpoint takes one, GPTQ-dequantized weights (bf16 scale × small integer) two. Products
  // are exact, so this computes the fp32 weights' sums up to order at tensor-core speed: bf16 mode only.
  kBF16Exact,
};

// Page-locked staging for weight uploads (reused across layers): host fp32 chunks are copied into two pinned
// buffers in turn while the previous chunk's DMA runs, then split on the device. Not thread-safe.
class WeightStager {
 public:
  explicit WeightStager(CudaContext& ctx);
  ~WeightStager();
  WeightStager(const WeightStager&) = delete;
  WeightStager& operator=(const WeightStager&) = delete;
  // Copies host w[n] fp32 into the device staging buffer (grown on demand) and returns it; valid until the next
  // call. The copies are enqueued on ctx.stream() (stream-ordered before later work there).
  const float* stage(const float* w, std::size_t n);
  // Device bf16 scratch i (0 or 1) of at least n elements (grown on demand), e.g. for split terms.
  uint16_t* scratch16(int i, std::size_t n);
  int64_t bytes_uploaded() const { return bytes_; }

 private:
  static constexpr std::size_t kChunk = 4u << 20;  // floats per pinned chunk (16 MiB)
  CudaContext& ctx_;
  PinnedBuffer<float> pinned_[2];
  cudaEvent_t done_[2] = {nullptr, nullptr};
  DeviceBuffer<float> dev_;
  DeviceBuffer<uint16_t> dev16_[2];
  int64_t bytes_ = 0;
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

// How bf16-mode attention without a KV cache runs, from ANGELSLIM_CUDA_ATTENTION (read once): unset or "fused" the
// fused ragged tensor-core kernel (attention_varlen_bf16, one launch for the batch), "gemm" cuBLAS GEMMs and a
// softmax kernel per sequence (attention_bf16_gemm), "tiled" the SIMT kernel (attention). Anything else is an
// InvalidInput error naming the variable. ANGELSLIM_CUDA_LEGACY=1 implies "gemm".
enum class AttentionPath { kFused, kGemm, kTiled };
AttentionPath attention_path();
const char* attention_path_name(AttentionPath p);

class CudaDecoderLayer {
 public:
  // The scratch buffers (a batch's activations, the attention workspaces). The layers of a model share their shapes,
  // so a new layer takes the previous one's (the constructor's `scratch`, from take_scratch) instead of allocating
  // its own: ~2 GB of cudaMalloc and cudaFree a layer at 32k-token batches, each synchronising the device.
  struct Scratch {  // grown on demand
    DeviceBuffer<float> a, o_buf, q_buf, k_buf, v_buf, attn, g, u, xq, logits, wts, slot_w, xin, y, shared;
    DeviceBuffer<uint16_t> x16;
    DeviceBuffer<float> amax, dyn_scale;
    DeviceBuffer<unsigned int> split_counts;
    AttentionWorkspace attn_ws;
    VarlenAttentionWorkspace varlen_ws;
    DeviceBuffer<int32_t> top;
    DeviceBuffer<int64_t> offsets, token_index;
    // Weight buffers to reuse: the previous layer's (the constructor frees what its uploads did not take), or a
    // linear's old weights while update_linear uploads the new ones. No cudaFree and cudaMalloc for each.
    std::vector<DeviceBuffer<uint16_t>> weights16;
    std::vector<DeviceBuffer<float>> weights32;
  };

  // Uploads the layer (synchronously). ctx must outlive the layer. inv_freq: [head_dim/2] (rope_inv_freq(cfg)).
  // Throws Unsupported for shapes the kernels do not handle (head_dim other than 64/128, > 256 experts).
  // kBF16Exact uploads through `stager` (required for it, optional otherwise).
  CudaDecoderLayer(CudaContext& ctx, const ModelConfig& cfg, const DecoderLayer& layer,
                   const std::vector<float>& inv_freq, DeviceWeights weights, WeightStager* stager = nullptr,
                   Scratch scratch = {});
  // Moves the scratch buffers out, and the weight buffers with them (for the next layer's constructor, just before
  // this layer is destroyed: it cannot run afterwards).
  Scratch take_scratch();
  CudaDecoderLayer(const CudaDecoderLayer&) = delete;
  CudaDecoderLayer& operator=(const CudaDecoderLayer&) = delete;

  // decoder_layer_forward on the device, in place on x: device [n_tokens, d_model] fp32, one sequence; RoPE positions
  // pos0 + t. With a cache (as on the CPU) the new keys/values are appended and attention also sees the cached ones
  // (callers pass pos0 = cache->size()). InvalidInput when opt.round_bf16 is false and the weights are kBF16.
  // With `seq_offsets` (host, size S+1, [0] = 0, last = n_tokens) x holds S sequences back to back, each at positions
  // 0.. with its own causal attention (a ragged batch, as the CPU decoder_layer_forward); pos0 0 and no cache then.
  // opt.stop_after ends the pass where the CPU one does (x is then left unspecified).
  void forward(float* x, int64_t n_tokens, int64_t pos0, const ForwardOptions& opt,
               CudaLinearObserver* observer = nullptr, CudaKvCache* cache = nullptr,
               std::span<const int64_t> seq_offsets = {});
  // Where forward_from starts: the GPU calibration's stage cache (cuda_calib.cpp) reruns a layer whose earlier linears
  // did not change from intermediate results it kept, instead of recomputing them.
  //   kInput: x is the layer input (as forward()).
  //   kAttn: x is the layer input; attn_scratch(n) holds the attention output of these tokens (the o_proj input).
  //   kResidual: x holds h = input + o_proj(attention), the residual stream after the attention block.
  //   kDownInput: x holds h; down_input_scratch(n) holds the dense MLP's down_proj input (dense layers only).
  enum class Start { kInput, kAttn, kResidual, kDownInput };
  // forward() from `start` (the same math and observer calls from that point on; the observers of the skipped part
  // are not called). observe_only: the caller needs only the observations, so a dense layer's pass without
  // stop_after ends after observing the down_proj input (x is then left unspecified). After the pass,
  // attn_scratch holds the attention output when the pass computed it (start kInput, stop_after not kQkvInput), x
  // holds h after a dense layer's kMlpInput stop, down_input_scratch the down_proj input after a dense layer's pass
  // through the MLP. Ragged batches only (seq_offsets; pos0 0, no KV cache).
  void forward_from(Start start, float* x, int64_t n_tokens, const ForwardOptions& opt, CudaLinearObserver* observer,
                    std::span<const int64_t> seq_offsets, bool observe_only);
  float* attn_scratch(int64_t n_tokens);        // [n, n_heads·head_dim] fp32
  float* down_input_scratch(int64_t n_tokens);  // [n, d_ff] fp32
  bool is_moe() const { return is_moe_; }
  int64_t dense_d_ff() const { return is_moe_ ? 0 : mlp_.gate.n_out; }  // the dense MLP's width (0 for MoE)

  // a = input_layernorm(x): device [n, d_model] -> out = o_proj(attention(...)) device [n, d_model] (no residual).
  void attention_block(const float* a, int64_t n_tokens, int64_t pos0, const ForwardOptions& opt,
                       CudaLinearObserver* observer, CudaKvCache* cache, float* out,
                       std::span<const int64_t> seq_offsets = {});
  // m = post_attention_layernorm(h): device [n, d_model] -> out = MLP(m) or MoE(m) device [n, d_model].
  void ffn_block(const float* m, int64_t n_tokens, const ForwardOptions& opt, CudaLinearObserver* observer, float* out);

  // Replaces the weights of linear `id` (same layer, same shape) by lin's and uploads them (GPTQ propagation).
  void update_linear(const LinearId& id, const Linear& lin);
  // The same with the weights already on this device (`w`: [n_out, n_in] fp32, complete; lin gives the rest: bias,
  // activation scheme). kF32 and kBF16Exact layers; false, changing nothing, for kBF16 (rounded on the host).
  bool update_linear_from_device(const LinearId& id, const Linear& lin, const float* w);

  // The device fp32 weights [n_out, n_in] of linear `id` (kF32 layers only; InvalidInput otherwise), for callers that
  // rewrite them in place on ctx.stream() (the AWQ search tries fake-quantized weights this way).
  float* weights_f32(const LinearId& id);

  // Linear `id`'s device weights where they equal the host's fp32 weights exactly (FP8 weight quantization on the
  // device, cuda_fp8.cpp): fp32 (kF32), or bf16 bits (kBF16Exact with one term, kBF16 with no value rounded); both
  // null otherwise.
  DeviceWeightsView exact_weights(const LinearId& id);

  DeviceWeights weights() const { return weights_; }
  int64_t index() const { return index_; }
  // kBF16Exact: linears that needed a second / a third bf16 term; elements no three terms hold (tiny residues).
  int64_t n_two_term() const { return n_terms_[0]; }
  int64_t n_three_term() const { return n_terms_[1]; }
  int64_t n_split_inexact() const { return n_terms_[2]; }
  // kBF16 only: number of weight values that were not bf16-representable and were rounded on upload.
  int64_t n_weights_rounded() const { return n_rounded_; }
  // Bytes of weights held on the device.
  std::size_t weight_bytes() const { return weight_bytes_; }

 private:
  struct Lin {
    int64_t n_out = 0, n_in = 0;
    DeviceBuffer<float> w32;                 // [n_out, n_in] (kF32)
    DeviceBuffer<uint16_t> w16;              // [n_out, n_in] bf16 (kBF16; kBF16Exact: term 0)
    DeviceBuffer<uint16_t> w16_lo, w16_lo2;  // kBF16Exact terms 1 and 2, empty when every element is zero
    DeviceBuffer<float> bias;                // [n_out] or empty
    ActQuant act = ActQuant::kNone;
    DeviceBuffer<float> input_scale;  // [1] for kFp8Static
  };
  struct DevMlp {
    Lin gate, up, down;
  };

  // device_w: the weights already on the device (l.w is not read) instead of l.w. The weight buffers come from
  // Scratch::weights16/32 where one has the size.
  Lin upload_linear(const Linear& l, const char* what, const float* device_w = nullptr);
  // Moves l's weight buffers into Scratch::weights16/32 for the next uploads; free_recycled frees what they left.
  void recycle(Lin& l);
  void free_recycled();
  bool update_linear_from(const LinearId& id, const Linear& lin, const float* device_w);
  Lin& linear_of(const LinearId& id);
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
  WeightStager* stager_ = nullptr;
  int64_t n_terms_[3] = {0, 0, 0};
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

  Scratch s_;  // grown on demand; its weight buffers are taken by the constructor's uploads, the rest freed
  std::vector<int64_t> offsets_host_;
};

}  // namespace angelslim::cuda
