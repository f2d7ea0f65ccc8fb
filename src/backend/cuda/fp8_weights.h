// FP8 weight quantization on the GPU (issue 6): the weights a layer already holds on the device are quantized there,
// bit for bit what quantize_fp8_with_scales / quantize_fp8_per_channel (src/quant/fp8_weight.cpp) produce on the host,
// and only the e4m3 bytes (1 byte per weight) and the scales come back. Used by CudaCalibActivations
// (quantize_fp8_weights, cuda_fp8.cpp); checked against the CPU in tests/gpu/cuda_fp8_test.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <vector>

#include "angelslim/backend/cuda_ops.h"
#include "angelslim/quant/fp8_weight.h"

namespace angelslim::cuda {

class Fp8WeightQuantizer {
 public:
  explicit Fp8WeightQuantizer(CudaContext& ctx);
  ~Fp8WeightQuantizer();
  Fp8WeightQuantizer(const Fp8WeightQuantizer&) = delete;
  Fp8WeightQuantizer& operator=(const Fp8WeightQuantizer&) = delete;

  // Per tensor: the linears with equal group[i] share scale fp8_scale_from_amax(max of their abs-max) (the host
  // computes the scales from the device abs-maxima with that very function); per channel (group ignored): one scale
  // per row. out[i] as the host functions return it; err[i] = ‖W − dequant‖_F / ‖W‖_F (0 for an all-zero W), the
  // sums in FP64 on the device (equal to the host's rel_error up to summation order). Returns false, leaving
  // out/err untouched, when some weight is not finite (the host path then reports it).
  bool quantize(std::span<const DeviceWeightsView> w, std::span<const int> group, bool per_channel,
                std::vector<Fp8Weight>& out, std::vector<float>& err);

  // Seconds of the last quantize(): device work and downloads (the host copies overlap them).
  double last_seconds() const { return last_s_; }

 private:
  CudaContext& ctx_;
  DeviceBuffer<float> amax_, scale_;
  DeviceBuffer<double> err_;
  DeviceBuffer<uint8_t> codes_[2];  // one linear's codes each, alternating
  PinnedBuffer<uint8_t> pinned_[2];
  cudaEvent_t copied_[2] = {nullptr, nullptr};
  double last_s_ = 0.0;
};

}  // namespace angelslim::cuda
