// The GPU calibration backend's entry points in a build without CUDA (with CUDA they live in
// src/backend/cuda/cuda_calib.cpp): no device, and `--device cuda` fails with one clear line.
#include "angelslim/calib/backend.h"

#include "angelslim/core/error.h"

#ifndef ANGELSLIM_HAVE_CUDA
namespace angelslim {

bool cuda_calib_available() { return false; }

void require_cuda_device() {
  throw Unsupported("--device cuda: this build has no CUDA backend (built without a CUDA compiler); use --device cpu");
}

std::unique_ptr<CalibBackend> make_cuda_calib(const ModelConfig&, const TensorStore&,
                                              const std::vector<std::vector<int32_t>>&, bool, const CudaCalibOptions&) {
  require_cuda_device();
  return nullptr;
}

}  // namespace angelslim
#endif
