// cuda_awq_quantize_layer in a build without CUDA (with CUDA it lives in src/backend/cuda/cuda_awq.cpp).
#include "angelslim/backend/cuda_awq.h"
#include "angelslim/core/error.h"

#ifndef ANGELSLIM_HAVE_CUDA
namespace angelslim {

void cuda_awq_quantize_layer(const ModelConfig&, const AwqDeviceParams&, DecoderLayer&, CalibBackend&, nlohmann::json&,
                             AwqDeviceOutput&) {
  throw Unsupported("AWQ on the GPU needs a build with the CUDA backend; use --device cpu");
}

}  // namespace angelslim
#endif
