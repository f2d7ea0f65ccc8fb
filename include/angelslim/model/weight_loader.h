// Reads linear weights of a checkpoint into fp32, dequantizing the formats this tool writes
// (compressed-tensors / native FP8, GPTQ v1, AWQ GEMM; SPEC 5.2-5.4).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/model/model_config.h"

namespace angelslim {

struct WeightFormat {
  enum class Kind { kNone, kFp8, kGptq, kAwq } kind = Kind::kNone;
  ActQuant act = ActQuant::kNone;  // FP8: static (input_scale) or dynamic
  int bits = 0;
  int group_size = 0;
  bool desc_act = false;
  std::string describe() const;
  // From config.json["quantization_config"] (absent = unquantized). Throws Unsupported for other methods.
  static WeightFormat from_config(const ModelConfig& cfg);
};

// A 1-D tensor of `n` values as fp32 (FormatError when missing or the shape differs).
std::vector<float> load_vector(const TensorStore& store, const std::string& name, int64_t n);
// A 2-D tensor [rows, cols] as fp32.
std::vector<float> load_matrix(const TensorStore& store, const std::string& name, int64_t rows, int64_t cols);
// The linear `prefix` (e.g. "model.layers.0.self_attn.q_proj") with weight [n_out, n_in], dequantized.
Linear load_linear(const TensorStore& store, const WeightFormat& fmt, const std::string& prefix, int64_t n_out,
                   int64_t n_in);

}  // namespace angelslim
