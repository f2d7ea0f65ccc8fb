// RunConfig's YAML spellings, output directory and JSON echo (the "config" object of quant_report.json,
// SPEC 5.7): the parsed configuration with defaults applied, keeping only the keys the algorithm reads.
#include <nlohmann/json.hpp>

#include "angelslim/config/run_config.h"

namespace angelslim {
namespace fs = std::filesystem;

std::string_view yaml_name(ModelName v) {
  switch (v) {
    case ModelName::kHunyuanDense:
      return "HunyuanDense";
    case ModelName::kHunyuanMoE:
      return "HunyuanMoE";
    case ModelName::kHunyuanVL:
      return "HunyuanVL";
  }
  return "?";
}
std::string_view yaml_name(TorchDtype v) {
  switch (v) {
    case TorchDtype::kAuto:
      return "auto";
    case TorchDtype::kBfloat16:
      return "bfloat16";
    case TorchDtype::kFloat16:
      return "float16";
    case TorchDtype::kFloat32:
      return "float32";
  }
  return "?";
}
std::string_view yaml_name(DeployBackend v) { return v == DeployBackend::kVllm ? "vllm" : "huggingface"; }
std::string_view yaml_name(QuantAlgo v) {
  switch (v) {
    case QuantAlgo::kFp8Static:
      return "fp8_static";
    case QuantAlgo::kFp8Dynamic:
      return "fp8_dynamic";
    case QuantAlgo::kGptq:
      return "int4_gptq";
    case QuantAlgo::kAwq:
      return "int4_awq";
  }
  return "?";
}
std::string_view yaml_name(WeightGranularity v) {
  switch (v) {
    case WeightGranularity::kPerTensor:
      return "per-tensor";
    case WeightGranularity::kPerChannel:
      return "per-channel";
    case WeightGranularity::kPerGroup:
      return "per-group";
  }
  return "?";
}
std::string_view yaml_name(SaveName v) { return v == SaveName::kCompressedTensors ? "compressed-tensors" : "fp8"; }
std::string_view yaml_name(AwqOutputDtype v) { return v == AwqOutputDtype::kFloat16 ? "float16" : "bfloat16"; }
std::string_view yaml_name(DatasetKind v) { return v == DatasetKind::kText ? "TextDataset" : "MultiModalDataset"; }

fs::path RunConfig::output_dir() const { return fs::path(global.save_path) / config_path.stem(); }

nlohmann::json RunConfig::to_json() const {
  using nlohmann::json;
  // Only the keys the chosen algorithm reads (SPEC 2.4 "read by" column).
  json quant_method = {{"weight", yaml_name(quant.weight)}};
  const bool gptq = quant.algo == QuantAlgo::kGptq;
  const bool awq = quant.algo == QuantAlgo::kAwq;
  if (quant.is_fp8())
    quant_method["activation"] = quant.activation_dynamic ? "per-tensor (dynamic)" : "per-tensor (static)";
  if (quant.is_fp8() || awq) {
    quant_method["weight_rounding"] = quant.gptq_rounding ? "gptq" : "rtn";
    if (quant.gptq_rounding) quant_method["damp_percent"] = quant.damp_percent;
  }
  if (gptq || awq) {
    quant_method["group_size"] = quant.group_size;
    quant_method["zero_point"] = quant.zero_point;
    quant_method["moe_min_token_fraction"] = quant.moe_min_token_fraction;
  }
  if (gptq) {
    quant_method["actorder"] = quant.actorder;
    quant_method["desc_act"] = quant.desc_act;
    quant_method["dequant_to_bf16"] = quant.dequant_to_bf16;
    quant_method["damp_percent"] = quant.damp_percent;
  }
  if (awq) {
    quant_method["mse_range"] = quant.mse_range;
    quant_method["awq_output_dtype"] = yaml_name(quant.awq_output_dtype);
  }
  json j = {
      {"config_path", config_path.string()},
      {"output_dir", output_dir().string()},
      {"global",
       {{"save_path", global.save_path},
        {"max_seq_length", global.max_seq_length},
        {"deploy_backend", yaml_name(global.deploy_backend)},
        {"seed", global.seed}}},
      {"model",
       {{"name", yaml_name(model.name)},
        {"model_path", model.model_path},
        {"torch_dtype", yaml_name(model.torch_dtype)}}},
      {"compression",
       {{"name", "PTQ"},
        {"quantization",
         {{"name", quant.name},
          {"algorithm", yaml_name(quant.algo)},
          {"bits", quant.bits},
          {"quant_method", quant_method},
          {"ignore_layers", quant.ignore_layers},
          {"save_name", quant.is_fp8() ? json(yaml_name(quant.save_name)) : json(nullptr)},
          {"quant_vit", quant.quant_vit}}}}},
      {"dataset", nullptr},
  };
  if (dataset) {
    j["dataset"] = {{"name", dataset->name},
                    {"kind", yaml_name(dataset->kind)},
                    {"data_path", dataset->data_path},
                    {"max_seq_length", dataset->max_seq_length},
                    {"num_samples", dataset->num_samples},
                    {"batch_size", dataset->batch_size},
                    {"shuffle", dataset->shuffle}};
  }
  return j;
}

}  // namespace angelslim
