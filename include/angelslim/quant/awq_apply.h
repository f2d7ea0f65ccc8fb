// Applying one decoder layer's AWQ scales (SPEC 4.5.3-4.5.5), shared by the CPU and CUDA quantizers: both search
// on the unscaled weights, then fold the chosen scales into the layer in this one order.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "angelslim/core/dtype.h"
#include "angelslim/model/hunyuan.h"

namespace angelslim {

// The chosen scales of one layer; an empty or all-ones vector leaves its group unscaled.
struct AwqLayerScales {
  std::vector<float> attn_in;   // [d_model]: input_layernorm / q, k, v columns
  std::vector<float> attn_out;  // [n_heads * head_dim]: v rows / o columns (MHA only)
  std::vector<float> mlp_in;    // [d_model]: post_attention_layernorm / gate, up columns (+ router compensation)
  std::vector<std::pair<LinearId, Linear*>> mlp_in_members;  // the gate/up linears of mlp_in
  struct Out {
    Mlp* mlp = nullptr;
    LinearId up_id;        // names the up_proj bias when it has one
    std::vector<float> s;  // [d_ff]: up rows / down columns
  };
  std::vector<Out> mlp_out;
};

// The norm folds' effective scales (awq_fold_norm s_eff), by which the folded linears' inputs are divided; empty
// when the group was not scaled.
struct AwqFolded {
  std::vector<float> attn_in, mlp_in;
};

// Folds the scales into `L`: 1/s into the norms (rounded to their source dtype) and s into the following columns,
// 1/s into v/up rows and biases, s into o/down columns, and for MoE the router's columns so its logits stay those of
// the unscaled input (up to its storage rounding). Every changed non-linear tensor is re-encoded in its source dtype
// (`source_dtype(name)`) into `modified` by tensor name.
AwqFolded apply_awq_scales(DecoderLayer& L, const ModelConfig& cfg, const AwqLayerScales& scales,
                           const std::function<DType(const std::string&)>& source_dtype,
                           std::map<std::string, std::vector<uint8_t>>& modified);

}  // namespace angelslim
