// The quantization run: YAML config in, vLLM-loadable checkpoint + quant_report.json out (SPEC 4.1, 5).
#pragma once
#include <filesystem>
#include <optional>
#include <string>

namespace angelslim {

struct RunOptions {
  std::filesystem::path config_path;
  std::optional<std::string> model_path;  // --model-path
  std::optional<std::string> save_path;   // --save-path
  std::string device = "cpu";             // "cpu" or "cuda" (calibration forward, observers, propagation on the GPU)
  // --device cuda: tokens per ragged batch, and the GPU memory the resident activations may use (unset: automatic;
  // the environment variable ANGELSLIM_CUDA_ACT_BUDGET_BYTES also sets it). Past the budget they spill to host.
  int64_t cuda_batch_tokens = 32768;
  std::optional<int64_t> cuda_activation_budget_bytes;
  // GPTQ solver with --device cuda: "auto" (the GPU one; the environment variable ANGELSLIM_GPTQ_SOLVER=cpu|cuda
  // overrides), "cuda" or "cpu". --device cpu always solves on the CPU.
  std::string gptq_solver = "auto";
  bool overwrite = false;
  // Continue from the checkpoint of an interrupted run with the same config, model and data (docs/reliability.md);
  // false (--no-resume) discards it and starts over.
  bool resume = true;
  // Skip the NaN/Inf scans of the source weights and the calibration activations (--allow-nonfinite).
  bool allow_nonfinite = false;
};

// Runs the whole job. Returns the exit status; throws angelslim::Error on failure (no partial output remains).
int run_pipeline(const RunOptions& opt);

}  // namespace angelslim
