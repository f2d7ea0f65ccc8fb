// GPTQ (INT4/INT8 weight-only) for the layer-streaming pipeline (SPEC 4.4): truly sequential stages inside a
// decoder layer (q/k/v -> o -> gate/up -> down, each calibrated on inputs produced by the already-quantized
// earlier stages), quantized-output propagation, RTN fallback for starving MoE experts, act-order modes, and
// export as GPTQ v1 (symmetric) or AWQ GEMM layout (asymmetric 4-bit) per SPEC 5.3.
#pragma once
#include <algorithm>
#include <map>

#include "angelslim/calib/stats.h"
#include "angelslim/config/run_config.h"
#include "angelslim/quant/gptq.h"
#include "angelslim/quant/ignore_match.h"
#include "angelslim/quant/layer_quantizer.h"

namespace angelslim {

// A solver with gptq_quantize's contract for a Hessian wherever it is held: the CPU one (its host copy), or a device
// one (which reads a Hessian kept on its device in place).
using GptqSolver = std::function<GptqResult(std::span<const float> w, int rows, int cols, const Hessian& h,
                                            const GptqOptions& options)>;
// gptq_quantize as a GptqSolver.
GptqSolver cpu_gptq_solver();

class GptqQuantizer : public LayerQuantizer {
 public:
  GptqQuantizer(const RunConfig& rc, const ModelConfig& cfg);
  bool needs_calibration() const override { return true; }
  void quantize_layer(DecoderLayer& layer, CalibActivations* acts, nlohmann::json& report) override;
  void quantize_layer_with(DecoderLayer& layer, CalibBackend* calib, nlohmann::json& report) override;
  bool backend_neutral() const override { return true; }
  bool has_output(const std::string& module) const override { return out_.count(module) != 0; }
  void write_module(const std::string& module, SafetensorsWriter& w) override;
  std::function<void(SafetensorsWriter&)> take_module(const std::string& module) override;
  bool deferred_writes() const override { return true; }
  nlohmann::ordered_json quantization_config() const override;
  void edit_config(nlohmann::ordered_json& config) const override;
  // Whether the output uses the AWQ GEMM layout (asymmetric 4-bit).
  bool awq_layout() const { return awq_layout_; }
  // Replaces the solver (default: gptq_quantize on the CPU); `name` goes to the report ("cpu", "cuda"). The
  // solver must be safe to call from `concurrency` threads at once: that many linears of a stage are then solved at
  // the same time (their results are committed in the serial order, so outputs do not depend on it).
  // `device_solver`: the solver runs on the calibration backend's device: the Hessians stay there for it
  // (StatsSpec::keep_on_device) and its W_hat goes to the backend from there (CalibBackend::linear_changed_on_device).
  void set_solver(GptqSolver solver, std::string name, int concurrency = 1, bool device_solver = false) {
    solver_ = std::move(solver);
    solver_name_ = std::move(name);
    concurrency_ = std::max(1, concurrency);
    device_solver_ = device_solver;
  }

 private:
  struct Out {
    int rows = 0, cols = 0;
    std::vector<uint8_t> codes;   // [rows, cols], stored column order
    std::vector<float> scales;    // [rows, n_groups]
    std::vector<int32_t> zeros;   // [rows, n_groups]
    std::vector<int32_t> g_idx;   // [cols]
    std::vector<float> w_hat;     // dequant_to_bf16 only: [rows, cols]
    int n_groups = 0;
  };
  // One linear to solve: its Hessian (shared by the linears of its input group), the stage's decisions for it.
  struct Job {
    LinearId id;
    Linear* lin = nullptr;
    const Hessian* h = nullptr;
    int64_t tokens = 0;
    bool starving = false;
    GptqOrder order = GptqOrder::kNatural;
  };
  struct Solved {
    Out out;
    nlohmann::json rec;
    std::vector<float> w_hat;
    std::shared_ptr<const DeviceMatrix> w_hat_device;  // instead of w_hat (a device solver's)
    double err_fro = 0.0;                              // the solver's ||W_hat - W|| (used with w_hat_device)
    std::vector<int32_t> perm;  // kFold only
  };
  // Solves one linear; reads job.lin->w and nothing else of the quantizer's state (safe to run concurrently).
  Solved solve(const Job& job) const;
  // Stores the result: the linear's weights become W_hat, the output, the report entry, the backend is told, and a
  // fold permutation is applied to the MLP's gate/up outputs.
  void commit(DecoderLayer& layer, const Job& job, Solved&& s, CalibBackend* acts, nlohmann::json& report);
  const ModelConfig& cfg_;
  int bits_;
  int group_size_;
  bool sym_;
  bool actorder_, desc_act_, dequant_bf16_, awq_layout_;
  float damp_;
  double min_token_fraction_;
  ScaleDType scale_dtype_;
  bool awq_bf16_;
  IgnoreMatcher ignore_;
  std::vector<std::string> ignored_modules_;
  std::map<std::string, Out> out_;
  GptqSolver solver_ = cpu_gptq_solver();
  std::string solver_name_ = "cpu";
  int concurrency_ = 1;
  bool device_solver_ = false;
};

// The GPU solver of a CUDA calibration backend (its device): gptq_quantize with the FP64 factorisation in cuSOLVER
// and the column loop on the device. concurrency 1: on the backend's stream, one call at a time; more: safe to call
// from that many threads at once (a pool of workspaces with their own streams). Unsupported for other backends and
// in builds without CUDA.
GptqSolver cuda_gptq_solver(CalibBackend& calib, int concurrency = 1);

}  // namespace angelslim
