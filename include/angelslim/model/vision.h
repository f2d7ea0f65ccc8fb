// HunyuanOCR vision tower (SPEC 3.8.2) and adapter "perceive" (SPEC 3.8.3) on the CPU reference ops:
// patch embedding + learned position table resized with the (g+0.1)/E scale (vLLM's form, SPEC 3.9), pre-LN ViT
// blocks with bidirectional attention, then RMSNorm, 2x2/stride-2 conv, GELU, 1x1 conv, a newline column, a
// linear to the LLM width, begin/end vectors and a final RMSNorm.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "angelslim/data/image.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/model/model_config.h"

namespace angelslim {

// config.json["vision_config"] (SPEC 1.4).
struct VisionConfig {
  int64_t d_model = 0;   // hidden_size (1152)
  int64_t d_ff = 0;      // intermediate_size (4304)
  int64_t n_layers = 0;  // num_hidden_layers (27)
  int64_t n_heads = 0;   // num_attention_heads (16)
  int64_t patch_size = 16;
  int64_t merge_size = 2;  // spatial_merge_size (the adapter's conv is merge x merge, stride merge)
  int64_t max_image_size = 2048;
  int64_t out_d = 0;  // the LLM width the adapter produces (text hidden_size)
  float eps = 1e-5f;  // LayerNorm and the adapter's RMSNorms
  int64_t pos_edge() const { return max_image_size / patch_size; }  // learned grid is pos_edge x pos_edge
  int64_t head_dim() const { return d_model / n_heads; }
};
// Throws InvalidInput naming the field for a missing/invalid entry, Unsupported for hidden_act other than gelu,
// temporal_patch_size other than 1 or interpolate_mode other than bilinear.
VisionConfig load_vision_config(const ModelConfig& cfg, const std::string& origin);

// The six ViT linears of a block (SPEC 4.1: the quant_vit set).
enum class VisionLinearKind { kQ, kK, kV, kO, kFc1, kFc2 };
// Module name in the checkpoint's naming, e.g. "vit.layers.3.self_attn.q_proj", "vit.layers.3.mlp.dense_h_to_4h".
std::string vision_linear_name(const std::string& prefix, int64_t layer, VisionLinearKind kind);

// Receives each ViT linear's input x [n_tokens, n_in] fp32 just before it is applied (one image at a time).
class VisionObserver {
 public:
  virtual ~VisionObserver() = default;
  virtual void observe(int64_t layer, VisionLinearKind kind, const float* x, int64_t n_tokens, int64_t n_in) = 0;
};

struct VisionLayer {
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;  // [d_model]
  Linear q, k, v, o, fc1, fc2;
};

struct VisionTower {
  VisionConfig cfg;
  std::string prefix;                   // "vit." or "vit.vit." (the checkpoint's spelling)
  std::vector<float> patch_w, patch_b;  // [d_model, 3*P*P] (Conv2d weight flattened (c, py, px)), [d_model]
  std::vector<float> pos;               // [pos_edge^2 + 1, d_model]; row 0 (CLS) unused
  std::vector<VisionLayer> layers;
  // adapter
  std::vector<float> before_rms;        // [d_model]
  std::vector<float> conv0_w, conv0_b;  // [2*d_model, d_model*m*m] (flattened (c, ky, kx)), [2*d_model]
  std::vector<float> conv2_w, conv2_b;  // [4*d_model, 2*d_model], [4*d_model]
  Linear mlp;                           // [out_d, 4*d_model] + bias
  std::vector<float> newline;           // [4*d_model]
  std::vector<float> begin, end;        // [out_d]
  std::vector<float> after_rms;         // [out_d]
};

// The spelling of the vision tensors: "vit." or "vit.vit."; throws Unsupported for transformers-5.x names
// (model.vision_tower.*) and FormatError when no vision tower is present.
std::string vision_prefix(const TensorStore& store);
// Every tensor name that belongs to the vision tower or the adapter (prefix match).
bool is_vision_tensor(const std::string& name, const std::string& prefix);
// Reads the tower (linears dequantized if the checkpoint stores them quantized, e.g. FP8 with quant_vit).
VisionTower load_vision_tower(const TensorStore& store, const ModelConfig& cfg);

struct VisionOptions {
  bool round_bf16 = false;  // BF16 storage points (the tower runs in BF16, SPEC 3.8.2); false = fp32 reference
};

// ViT: patches [gh*gw, 3*P*P] (preprocess_image) -> hidden states [gh*gw, d_model].
std::vector<float> vit_forward(const VisionTower& t, const ImagePatches& img, const VisionOptions& opt,
                               VisionObserver* observer = nullptr);
// Adapter: ViT output [gh*gw, d_model] -> [n_image_tokens(gh, gw), out_d].
std::vector<float> adapter_forward(const VisionTower& t, const float* z, int64_t grid_h, int64_t grid_w,
                                   const VisionOptions& opt);
// Both: image -> LLM embeddings [n_image_tokens, out_d].
std::vector<float> encode_image(const VisionTower& t, const ImagePatches& img, const VisionOptions& opt,
                                VisionObserver* observer = nullptr);
// Tokens an image occupies in the sequence: (gh/m)*(gw/m + 1) + 2 (SPEC 3.8.3).
int64_t n_image_tokens(int64_t grid_h, int64_t grid_w, int64_t merge_size);

}  // namespace angelslim
