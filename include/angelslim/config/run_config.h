// The run configuration: AngelSlim's YAML schema (SPEC 2.1-2.6) parsed with defaults applied and
// validated in one pass (every problem reported at once), plus the CLI overrides of SPEC 2.1.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace angelslim {

enum class ModelName { kHunyuanDense, kHunyuanMoE, kHunyuanVL };
enum class TorchDtype { kAuto, kBfloat16, kFloat16, kFloat32 };
enum class DeployBackend { kVllm, kHuggingface };
// int4_gptq/int8_gptq -> kGptq, int4_awq/int8_awq -> kAwq (bits decides the width).
enum class QuantAlgo { kFp8Static, kFp8Dynamic, kGptq, kAwq };
enum class WeightGranularity { kPerTensor, kPerChannel, kPerGroup };
enum class SaveName { kCompressedTensors, kFp8 };
enum class AwqOutputDtype { kFloat16, kBfloat16 };
// Resolved dataset kind: `auto` becomes kMultiModal for HunyuanVL and kText otherwise.
enum class DatasetKind { kText, kMultiModal };

// Spellings as written in the YAML ("HunyuanMoE", "int4_gptq", "per-group", "TextDataset", ...).
std::string_view yaml_name(ModelName v);
std::string_view yaml_name(TorchDtype v);
std::string_view yaml_name(DeployBackend v);
std::string_view yaml_name(QuantAlgo v);  // canonical AngelSlim name: fp8_static | ... | int4_awq
std::string_view yaml_name(WeightGranularity v);
std::string_view yaml_name(SaveName v);
std::string_view yaml_name(AwqOutputDtype v);
std::string_view yaml_name(DatasetKind v);

// `global` (SPEC 2.2).
struct GlobalSection {
  std::string save_path = "./output";
  int max_seq_length = 2048;  // replaced by dataset.max_seq_length when a dataset is used
  DeployBackend deploy_backend = DeployBackend::kVllm;
  uint64_t seed = 42;  // (ext) shuffle seed
};

// `model` (SPEC 2.3).
struct ModelSection {
  ModelName name = ModelName::kHunyuanDense;
  std::string model_path;  // as given (or from --model-path); an existing directory
  TorchDtype torch_dtype = TorchDtype::kAuto;
};

// `compression.quantization` (SPEC 2.4, 2.6) after defaults, aliases and the group_size rule.
struct QuantSection {
  QuantAlgo algo = QuantAlgo::kFp8Dynamic;
  std::string name = "fp8_dynamic";  // as written (int8_gptq / int8_awq kept for the report)
  int bits = 8;                      // FP8: always 8; GPTQ/AWQ: 4 or 8
  WeightGranularity weight = WeightGranularity::kPerTensor;
  // FP8 activation scheme: always per-tensor; static for fp8_static, dynamic for fp8_dynamic.
  bool activation_dynamic = true;
  // GPTQ/AWQ: 32, 64 or 128 for per-group (-1 in the YAML means 128); -1 for per-channel (one group
  // spanning the whole input). FP8: 0 (not applicable).
  int group_size = 0;
  bool zero_point = false;                // GPTQ (ext) default false; AWQ required; AWQ bits 8 forces false
  bool mse_range = false;                 // AWQ clip search (SPEC 4.5.6)
  bool actorder = true;                   // GPTQ
  bool desc_act = false;                  // GPTQ (ext)
  bool dequant_to_bf16 = false;           // GPTQ
  double damp_percent = 0.01;             // GPTQ and FP8 GPTQ rounding (ext), in (0, 1]
  bool gptq_rounding = false;             // fp8_static, AWQ (ext): quant_method.weight_rounding: gptq
  double moe_min_token_fraction = 0.005;  // GPTQ/AWQ (ext), in [0, 1]
  AwqOutputDtype awq_output_dtype = AwqOutputDtype::kFloat16;  // AWQ (ext)
  std::vector<std::string> ignore_layers;                      // SPEC 2.7; "re:" entries already checked to compile
  SaveName save_name = SaveName::kCompressedTensors;           // FP8 only
  bool quant_vit = false;  // FP8 on HunyuanVL only (false elsewhere, with a warning when set)

  bool is_fp8() const { return algo == QuantAlgo::kFp8Static || algo == QuantAlgo::kFp8Dynamic; }
  bool needs_dataset() const { return algo != QuantAlgo::kFp8Dynamic; }
};

// `dataset` (SPEC 2.5).
struct DatasetSection {
  DatasetKind kind = DatasetKind::kText;
  std::string name = "TextDataset";  // as written (alias or auto kept for the report)
  std::string data_path;             // absolute: CWD-relative if that exists, else YAML-dir-relative if that
                                     // exists, else CWD-relative (a warning says it was not found)
  int max_seq_length = 2048;
  int num_samples = 256;
  int batch_size = 1;
  bool shuffle = false;
};

struct RunConfig {
  std::filesystem::path config_path;  // the YAML file as given
  GlobalSection global;
  ModelSection model;
  QuantSection quant;
  std::optional<DatasetSection> dataset;  // absent for fp8_dynamic (a given section is ignored)
  std::vector<std::string> warnings;      // "<file>: <yaml.path>: <message>"

  // <global.save_path>/<yaml file stem> (SPEC 2.1), e.g. ./output/hunyuan_7b_dense_int4_gptq.
  std::filesystem::path output_dir() const;
  // The parsed configuration with defaults applied, for quant_report.json (SPEC 5.7).
  nlohmann::json to_json() const;
};

struct CliOverrides {
  std::optional<std::string> model_path;  // --model-path
  std::optional<std::string> save_path;   // --save-path
};

// Reads and validates the YAML at `path`. Throws IoError when the file cannot be read and
// InvalidInput otherwise: a syntax error as "<file>:<line>:<col>: YAML syntax error: ...", or all
// schema problems at once: first line "<file>: N problem(s):", then one line per problem,
// "<file>: <yaml.path>: <what is wrong> (expected ...)".
RunConfig load_run_config(const std::filesystem::path& path, const CliOverrides& overrides = {});
// The same for YAML text already read; `path` is used for messages and for resolving relative paths.
RunConfig parse_run_config(const std::string& text, const std::filesystem::path& path,
                           const CliOverrides& overrides = {});

}  // namespace angelslim
