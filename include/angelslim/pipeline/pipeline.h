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
  std::string device = "cpu";
  bool overwrite = false;
  bool resume = true;
};

// Runs the whole job. Returns the exit status; throws angelslim::Error on failure (no partial output remains).
int run_pipeline(const RunOptions& opt);

}  // namespace angelslim
