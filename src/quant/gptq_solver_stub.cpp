// cuda_gptq_solver in a build without CUDA (with CUDA it lives in src/backend/cuda/cuda_gptq.cpp).
#include "angelslim/core/error.h"
#include "angelslim/quant/gptq_quantizer.h"

#ifndef ANGELSLIM_HAVE_CUDA
namespace angelslim {

GptqSolver cuda_gptq_solver(CalibBackend&, int) {
  throw Unsupported("the GPU GPTQ solver needs a build with the CUDA backend; use --device cpu");
}

}  // namespace angelslim
#endif
