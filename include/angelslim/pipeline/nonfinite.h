// NaN/Inf guards of the quantization run (docs/errors.md): the source weights are scanned before a layer is
// quantized and the calibration activations after each layer, so a non-finite value is reported with the tensor
// or layer that holds it instead of surfacing later as a broken scale. --allow-nonfinite skips both scans.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "angelslim/io/safetensors.h"

namespace angelslim {

// Index of the first NaN/Inf element of a floating-point tensor (BF16, F16, F32, F64), or -1 (also for other types).
int64_t first_nonfinite(const TensorView& t);
// Throws InvalidInput naming the file, tensor, element and value when `t` holds a NaN/Inf.
void check_finite(const TensorView& t);
// Throws InvalidInput naming the decoder layer (and the sample and token) when the activations `x`
// ([tokens, d_model], samples back to back at `sample_offsets`) that layer `layer` produced hold a NaN/Inf.
void check_finite_activations(std::span<const float> x, int64_t d_model, std::span<const int64_t> sample_offsets,
                              int64_t layer);

}  // namespace angelslim
