// The GPTQ solver on the GPU (issue 6): gptq_quantize (quant/gptq.h, SPEC 4.4.3-4.4.5) with the same contract and
// result. Order, damping ladder and static-group parameters are computed on the host by the CPU's rules; the FP64
// Cholesky factorisation and triangular inverse run in cuSOLVER, the column loop (one thread per weight row), the
// lazy block updates (cuBLAS SGEMM, FP32, no TF32) and the output-error traces on the device.
#pragma once
#include <cusolverDn.h>

#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "angelslim/backend/cuda_ops.h"
#include "angelslim/calib/stats.h"
#include "angelslim/quant/gptq.h"

namespace angelslim::cuda {

// A cuSOLVER handle on ctx's stream and device buffers reused across calls (grown on demand). Not thread-safe.
class GptqCudaWorkspace {
 public:
  explicit GptqCudaWorkspace(CudaContext& ctx);
  ~GptqCudaWorkspace();
  GptqCudaWorkspace(const GptqCudaWorkspace&) = delete;
  GptqCudaWorkspace& operator=(const GptqCudaWorkspace&) = delete;

  // gptq_quantize on the device. w: [rows, cols] f32 row-major; h: [cols, cols] f32 symmetric (H = (2/N) XᵀX).
  // Also fills GptqResult::out_err. When every factorisation fails, the CPU solver's RTN fallback runs (the CPU
  // solver itself), so the fallback path is the CPU's.
  GptqResult quantize(std::span<const float> w, int rows, int cols, std::span<const float> h,
                      const GptqOptions& options);
  // The same for a Hessian wherever it is held: one the calibration pass left on this device (CudaDeviceMatrix) is
  // scaled in place, with no copy through the host; the others are checked and uploaded as above.
  GptqResult quantize(std::span<const float> w, int rows, int cols, const Hessian& h, const GptqOptions& options);

 private:
  CudaContext& ctx_;
  cusolverDnHandle_t solver_ = nullptr;
  DeviceBuffer<float> h_, u_, w_, wt_, err_, w_hat_, tmp_, tmp2_, scales_;
  DeviceBuffer<double> a_, potrf_work_, loss_;
  DeviceBuffer<unsigned char> trtri_work_;
  std::vector<unsigned char> trtri_host_;
  DeviceBuffer<int32_t> perm_, zeros_;
  DeviceBuffer<uint8_t> dead_, codes_t_, codes_;
  DeviceBuffer<int> info_;
  // W_hat buffers handed out with results (GptqOptions::w_hat_on_device) come back here when the result is dropped:
  // reused, not freed (cudaFree would synchronise the device under the other solves).
  struct Spare {
    std::mutex mu;
    std::vector<DeviceBuffer<float>> free;
    // The smallest free buffer of at least n elements, else a new one of n.
    DeviceBuffer<float> take(std::size_t n) {
      DeviceBuffer<float> b;
      {
        std::lock_guard<std::mutex> lock(mu);
        auto best = free.end();
        for (auto it = free.begin(); it != free.end(); ++it)
          if (it->size() >= n && (best == free.end() || it->size() < best->size())) best = it;
        if (best != free.end()) {
          b = std::move(*best);
          free.erase(best);
        }
      }
      if (b.size() < n) b.reset(n);
      return b;
    }
  };
  std::shared_ptr<Spare> spare_ = std::make_shared<Spare>();
};

}  // namespace angelslim::cuda
