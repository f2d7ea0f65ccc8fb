// YAML config loader (SPEC 2): yaml-cpp parse, per-section key/type/value checks that collect every
// problem before throwing one InvalidInput, defaults, AngelSlim aliases and the SPEC 2.6 combinations.
#include "angelslim/config/run_config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <map>
#include <sstream>
#include <system_error>

#include "angelslim/core/error.h"
#include "angelslim/quant/ignore_match.h"
#include "text/tokenizer_util.h"

namespace angelslim {
namespace fs = std::filesystem;

namespace {

using Keys = std::initializer_list<std::string_view>;

std::string join_names(Keys keys) {
  std::string s;
  for (std::string_view k : keys) {
    if (!s.empty()) s += ", ";
    s += k;
  }
  return s;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

bool is_null(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return true;
  if (!n.IsScalar() || n.Tag() != "?") return false;
  const std::string& s = n.Scalar();
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

// How a node reads in a message: "a list", "a mapping", "null", "'text'".
std::string describe(const YAML::Node& n) {
  if (is_null(n)) return "null";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return fmt::format("'{}'", n.Scalar());
}

// A mapping's entries by key (first occurrence), with the YAML path of the mapping.
struct Section {
  std::string path;  // "" for the root
  std::map<std::string, YAML::Node> items;
  bool present = false;
  bool ok = true;  // false when the node is not a mapping (already reported; skip its keys)

  std::string key_path(std::string_view key) const {
    return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
  }
  bool has(std::string_view key) const { return items.count(std::string(key)) > 0; }
  // Present and not null.
  bool has_value(std::string_view key) const {
    auto it = items.find(std::string(key));
    return it != items.end() && !is_null(it->second);
  }
  YAML::Node get(std::string_view key) const {
    auto it = items.find(std::string(key));
    return it == items.end() ? YAML::Node() : it->second;
  }
};

class Loader {
 public:
  Loader(std::string file, const CliOverrides& overrides, RunConfig* cfg)
      : file_(std::move(file)), overrides_(overrides), cfg_(cfg) {}

  void run(const YAML::Node& root);

  const std::vector<std::string>& problems() const { return problems_; }

 private:
  void problem(const std::string& path, const std::string& what, const std::string& expected = {}) {
    std::string line = fmt::format("{}: {}: {}", file_, path, what);
    if (!expected.empty()) line += fmt::format(" (expected {})", expected);
    problems_.push_back(std::move(line));
  }
  void warn(const std::string& path, const std::string& what) {
    cfg_->warnings.push_back(fmt::format("{}: {}: {}", file_, path, what));
  }

  // Collects a mapping's entries; reports a non-mapping node, duplicate keys, non-string keys and
  // keys outside `known` + `ignored`.
  Section section(const YAML::Node& node, const std::string& path, Keys known, Keys ignored);
  // Typed getters: nullopt when absent, null, or wrong (the latter two reported).
  std::optional<std::string> get_string(const Section& s, std::string_view key);
  std::optional<int64_t> get_int(const Section& s, std::string_view key);
  std::optional<double> get_float(const Section& s, std::string_view key);
  std::optional<bool> get_bool(const Section& s, std::string_view key);
  void require(const Section& s, std::string_view key, const std::string& expected) {
    if (!s.has_value(key)) problem(s.key_path(key), s.has(key) ? "missing value" : "missing", expected);
  }
  // Warns that `key` is set but not read by the chosen algorithm.
  void warn_unused(const Section& s, std::string_view key, std::string_view why) {
    if (s.has_value(key)) warn(s.key_path(key), fmt::format("ignored ({})", why));
  }

  void parse_global(const Section& root);
  void parse_model(const Section& root);
  void parse_compression(const Section& root);
  void parse_quantization(const Section& comp);
  void parse_dataset(const Section& root);

  std::string file_;
  const CliOverrides& overrides_;
  RunConfig* cfg_;
  std::vector<std::string> problems_;
  bool algo_known_ = false;
  bool model_known_ = false;  // model.name parsed (avoids follow-on problems from a bad name)
};

Section Loader::section(const YAML::Node& node, const std::string& path, Keys known, Keys ignored) {
  Section s;
  s.path = path;
  if (!node.IsDefined()) return s;
  s.present = true;
  if (is_null(node)) return s;  // an empty section: every key takes its default
  if (!node.IsMap()) {
    problem(path.empty() ? std::string("<document>") : path, fmt::format("is {}", describe(node)), "a mapping");
    s.ok = false;
    return s;
  }
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      problem(path.empty() ? std::string("<document>") : path, fmt::format("has a key that is {}", describe(kv.first)),
              "string keys");
      continue;
    }
    const std::string key = kv.first.Scalar();
    const std::string kp = s.key_path(key);
    if (s.items.count(key)) {
      problem(kp, "duplicate key", "each key once");
      continue;
    }
    const bool is_known = std::find(known.begin(), known.end(), key) != known.end();
    const bool is_ignored = std::find(ignored.begin(), ignored.end(), key) != ignored.end();
    if (!is_known && !is_ignored) {
      std::string what = "unknown key";
      std::string_view best;
      size_t best_d = 3;
      for (std::string_view k : known) {
        const size_t d = edit_distance(key, k);
        if (d < best_d) {
          best_d = d;
          best = k;
        }
      }
      if (!best.empty()) what += fmt::format(", did you mean '{}'?", best);
      problem(kp, what, fmt::format("one of: {}", join_names(known)));
      continue;
    }
    s.items.emplace(key, kv.second);
  }
  return s;
}

std::optional<std::string> Loader::get_string(const Section& s, std::string_view key) {
  if (!s.has_value(key)) return std::nullopt;
  const YAML::Node n = s.get(key);
  if (!n.IsScalar()) {
    problem(s.key_path(key), fmt::format("is {}", describe(n)), "a string");
    return std::nullopt;
  }
  return n.Scalar();
}

std::optional<int64_t> Loader::get_int(const Section& s, std::string_view key) {
  if (!s.has(key)) return std::nullopt;
  const YAML::Node n = s.get(key);
  if (n.IsScalar() && n.Tag() == "?" && !is_null(n)) {
    const std::string& t = n.Scalar();
    size_t i = (t[0] == '-' || t[0] == '+') ? 1 : 0;
    bool digits = i < t.size();
    for (size_t j = i; j < t.size(); ++j) digits = digits && t[j] >= '0' && t[j] <= '9';
    errno = 0;
    char* end = nullptr;
    const long long v = digits ? std::strtoll(t.c_str(), &end, 10) : 0;
    if (digits && errno == 0) return static_cast<int64_t>(v);
  }
  problem(s.key_path(key), fmt::format("is {}", describe(n)), "an integer");
  return std::nullopt;
}

std::optional<double> Loader::get_float(const Section& s, std::string_view key) {
  if (!s.has(key)) return std::nullopt;
  const YAML::Node n = s.get(key);
  if (n.IsScalar() && n.Tag() == "?" && !is_null(n)) {
    const std::string& t = n.Scalar();
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(t.c_str(), &end);
    if (end == t.c_str() + t.size() && errno == 0 && std::isfinite(v)) return v;
  }
  problem(s.key_path(key), fmt::format("is {}", describe(n)), "a finite number");
  return std::nullopt;
}

std::optional<bool> Loader::get_bool(const Section& s, std::string_view key) {
  if (!s.has(key)) return std::nullopt;
  const YAML::Node n = s.get(key);
  if (n.IsScalar() && n.Tag() == "?") {
    // YAML 1.1 booleans, as PyYAML (AngelSlim) reads them.
    static const char* const kTrue[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char* const kFalse[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    for (const char* t : kTrue)
      if (n.Scalar() == t) return true;
    for (const char* f : kFalse)
      if (n.Scalar() == f) return false;
  }
  problem(s.key_path(key), fmt::format("is {}", describe(n)), "true or false");
  return std::nullopt;
}

void Loader::run(const YAML::Node& root_node) {
  if (!root_node.IsDefined() || is_null(root_node)) {
    problem("<document>", "the file is empty", "a mapping with global, model, compression, dataset");
    return;
  }
  const Section root = section(root_node, "", {"global", "model", "compression", "dataset", "inference"}, {});
  if (!root_node.IsMap()) return;
  parse_global(root);
  parse_model(root);
  parse_compression(root);
  parse_dataset(root);
}

void Loader::parse_global(const Section& root) {
  const Section g = section(root.get("global"), "global", {"save_path", "max_seq_length", "deploy_backend", "seed"},
                            {"hidden_size", "model_arch_type", "absolute_model_path", "model_path", "config_dir"});
  GlobalSection& out = cfg_->global;
  if (!g.ok) return;
  if (auto v = get_string(g, "save_path")) {
    if (v->empty())
      problem(g.key_path("save_path"), "is empty", "an output root directory");
    else
      out.save_path = *v;
  }
  if (overrides_.save_path) {
    if (overrides_.save_path->empty())
      problem("global.save_path (--save-path)", "is empty", "an output root directory");
    else
      out.save_path = *overrides_.save_path;
  }
  if (auto v = get_int(g, "max_seq_length")) {
    if (*v < 1 || *v > (int64_t{1} << 30))
      problem(g.key_path("max_seq_length"), fmt::format("is {}", *v), "a positive token count");
    else
      out.max_seq_length = static_cast<int>(*v);
  }
  if (auto v = get_string(g, "deploy_backend")) {
    if (*v == "vllm") {
      out.deploy_backend = DeployBackend::kVllm;
    } else if (*v == "huggingface") {
      out.deploy_backend = DeployBackend::kHuggingface;
      warn(g.key_path("deploy_backend"), "'huggingface' accepted; the output is the same vLLM-ready checkpoint");
    } else {
      problem(g.key_path("deploy_backend"), fmt::format("'{}' is not supported", *v), "vllm or huggingface");
    }
  }
  if (auto v = get_int(g, "seed")) {
    if (*v < 0)
      problem(g.key_path("seed"), fmt::format("is {}", *v), "a non-negative integer");
    else
      out.seed = static_cast<uint64_t>(*v);
  }
}

void Loader::parse_model(const Section& root) {
  if (!root.has("model")) {
    problem("model", "missing", "a model section with name and model_path");
    return;
  }
  const Section m = section(root.get("model"), "model", {"name", "model_path", "torch_dtype"},
                            {"trust_remote_code", "low_cpu_mem_usage", "use_cache", "device_map", "attn_implementation",
                             "cache_dir", "enable_expert_parallel", "use_audio_in_video"});
  ModelSection& out = cfg_->model;
  if (!m.ok) return;
  require(m, "name", "HunyuanDense, HunyuanMoE or HunyuanVL");
  if (auto v = get_string(m, "name")) {
    model_known_ = *v == "HunyuanDense" || *v == "HunyuanMoE" || *v == "HunyuanVL";
    if (*v == "HunyuanDense")
      out.name = ModelName::kHunyuanDense;
    else if (*v == "HunyuanMoE")
      out.name = ModelName::kHunyuanMoE;
    else if (*v == "HunyuanVL")
      out.name = ModelName::kHunyuanVL;
    else
      problem(m.key_path("name"), fmt::format("'{}' is not a supported model", *v),
              "HunyuanDense, HunyuanMoE or HunyuanVL");
  }
  std::optional<std::string> path = overrides_.model_path;
  std::string label = "model.model_path (--model-path)";
  if (!path) {
    require(m, "model_path", "a local checkpoint directory");
    path = get_string(m, "model_path");
    label = m.key_path("model_path");
  }
  if (path) {
    std::error_code ec;
    if (path->empty()) {
      problem(label, "is empty", "a local checkpoint directory");
    } else if (!fs::is_directory(*path, ec)) {
      const bool exists = fs::exists(*path, ec);
      problem(label,
              fmt::format("'{}' {}", *path,
                          exists ? "is not a directory"
                                 : "does not exist; Hub ids are not downloaded, pass a local copy with --model-path"),
              "a local Hugging Face checkpoint directory");
    } else {
      out.model_path = *path;
    }
  }
  if (auto v = get_string(m, "torch_dtype")) {
    if (*v == "auto")
      out.torch_dtype = TorchDtype::kAuto;
    else if (*v == "bfloat16")
      out.torch_dtype = TorchDtype::kBfloat16;
    else if (*v == "float16")
      out.torch_dtype = TorchDtype::kFloat16;
    else if (*v == "float32")
      out.torch_dtype = TorchDtype::kFloat32;
    else
      problem(m.key_path("torch_dtype"), fmt::format("'{}' is not supported", *v),
              "auto, bfloat16, float16 or float32");
  }
}

void Loader::parse_compression(const Section& root) {
  if (!root.has("compression")) {
    problem("compression", "missing", "a compression section with name PTQ and quantization");
    return;
  }
  const Section c = section(root.get("compression"), "compression", {"name", "quantization", "calibrate"}, {});
  if (!c.ok) return;
  require(c, "name", "PTQ");
  if (c.has_value("name")) {
    const YAML::Node raw = c.get("name");
    // AngelSlim also accepts a one-element list (name: [PTQ]).
    const YAML::Node n = (raw.IsSequence() && raw.size() == 1 && raw[0].IsScalar()) ? raw[0] : raw;
    if (!n.IsScalar())
      problem(c.key_path("name"), fmt::format("is {}", describe(n)), "PTQ (a string or a one-element list)");
    else if (n.Scalar() != "PTQ")
      problem(c.key_path("name"), fmt::format("'{}' is not supported", n.Scalar()),
              "PTQ: only post-training quantization is implemented");
  }
  if (c.has("calibrate")) {
    const Section cal = section(c.get("calibrate"), c.key_path("calibrate"), {"backend"}, {});
    if (auto v = get_string(cal, "backend")) {
      if (*v == "vllm")
        problem(cal.key_path("backend"), "'vllm' is not supported (calibration runs in this tool)", "hf");
      else if (*v != "hf")
        problem(cal.key_path("backend"), fmt::format("'{}' is not supported", *v), "hf");
    }
  }
  require(c, "quantization", "a quantization section");
  if (c.has_value("quantization")) parse_quantization(c);
}

void Loader::parse_quantization(const Section& comp) {
  const Section q = section(comp.get("quantization"), comp.key_path("quantization"),
                            {"name", "bits", "quant_method", "ignore_layers", "save_name", "quant_vit", "zero_point",
                             "mse_range", "quant_helpers", "smooth_alpha"},
                            {"low_memory", "cpu_convert", "quant_analyse", "modules_to_quantize"});
  QuantSection& out = cfg_->quant;
  if (!q.ok) {
    algo_known_ = false;
    return;
  }

  // name
  algo_known_ = true;
  if (auto v = get_string(q, "name")) {
    const std::string& n = *v;
    out.name = n;
    static const char* const kRejected[] = {"fp8_lepto", "fp8_blockwise", "int8_dynamic", "w4a8_fp8",
                                            "w4a8i8",    "int4_gptaq",    "daq"};
    const bool rejected =
        std::find(std::begin(kRejected), std::end(kRejected), n) != std::end(kRejected) || n.rfind("nvfp4", 0) == 0;
    if (n == "fp8_static") {
      out.algo = QuantAlgo::kFp8Static;
    } else if (n == "fp8_dynamic") {
      out.algo = QuantAlgo::kFp8Dynamic;
    } else if (n == "int4_gptq" || n == "int8_gptq") {
      out.algo = QuantAlgo::kGptq;
    } else if (n == "int4_awq" || n == "int8_awq") {
      out.algo = QuantAlgo::kAwq;
    } else {
      algo_known_ = false;
      problem(q.key_path("name"),
              rejected ? fmt::format("'{}' is an AngelSlim algorithm this toolkit does not implement", n)
                       : fmt::format("'{}' is not a known algorithm", n),
              "fp8_static, fp8_dynamic, int4_gptq, int8_gptq, int4_awq or int8_awq");
    }
  } else if (q.has("name")) {
    algo_known_ = false;  // wrong type or null, reported
  }
  const bool fp8 = algo_known_ && out.is_fp8();
  const bool gptq = algo_known_ && out.algo == QuantAlgo::kGptq;
  const bool awq = algo_known_ && out.algo == QuantAlgo::kAwq;
  const std::string algo_name = algo_known_ ? out.name : std::string("this algorithm");

  // bits
  const std::optional<int64_t> bits = get_int(q, "bits");
  const bool int8_alias = out.name == "int8_gptq" || out.name == "int8_awq";
  if (fp8) {
    out.bits = 8;
    if (bits && *bits != 8) warn(q.key_path("bits"), fmt::format("{} ignored: FP8 is always 8 bits", *bits));
  } else if (gptq || awq) {
    if (int8_alias) {
      out.bits = 8;
      if (bits && *bits != 8)
        problem(q.key_path("bits"), fmt::format("is {} but {} means 8 bits", *bits, out.name), "8 or no bits key");
    } else if (!bits) {
      out.bits = 8;
      if (!q.has("bits"))
        warn(q.key_path("bits"),
             fmt::format("missing: {} runs with 8 bits (AngelSlim default); set bits: 4 for INT4", out.name));
    } else if (*bits == 2 || *bits == 3) {
      problem(q.key_path("bits"), fmt::format("{}-bit is not supported (vLLM has no Marlin kernel for it)", *bits),
              "4 or 8");
    } else if (*bits != 4 && *bits != 8) {
      problem(q.key_path("bits"), fmt::format("is {}", *bits), "4 or 8");
    } else {
      out.bits = static_cast<int>(*bits);
    }
  }

  // quant_method
  require(q, "quant_method", "a mapping with at least weight");
  const Section m =
      section(q.get("quant_method"), q.key_path("quant_method"),
              {"weight", "activation", "kv_cache", "group_size", "zero_point", "mse_range", "actorder", "desc_act",
               "dequant_to_bf16", "damp_percent", "moe_min_token_fraction", "awq_output_dtype", "weight_rounding"},
              {});
  const bool method_ok = q.has_value("quant_method") && m.ok;
  if (method_ok) require(m, "weight", fp8 ? "per-tensor or per-channel" : "per-group or per-channel");
  if (auto v = get_string(m, "weight")) {
    const std::string wp = m.key_path("weight");
    if (*v == "per-tensor" && (fp8 || !algo_known_))
      out.weight = WeightGranularity::kPerTensor;
    else if (*v == "per-channel")
      out.weight = WeightGranularity::kPerChannel;
    else if (*v == "per-group" && !fp8)
      out.weight = WeightGranularity::kPerGroup;
    else
      problem(wp, fmt::format("'{}' is not valid for {}", *v, algo_name),
              fp8 ? "per-tensor or per-channel" : "per-group or per-channel");
  }
  // activation: FP8 only, per-tensor only; required for fp8_static.
  const std::optional<std::string> act = get_string(m, "activation");
  if (fp8) {
    out.activation_dynamic = out.algo == QuantAlgo::kFp8Dynamic;
    if (act && *act != "per-tensor")
      problem(m.key_path("activation"), fmt::format("'{}' is not supported", *act), "per-tensor");
    if (out.algo == QuantAlgo::kFp8Static && !m.has_value("activation") && method_ok)
      problem(m.key_path("activation"), "missing",
              "per-tensor (fp8_static calibrates one static input scale per linear)");
  } else if (algo_known_) {
    out.activation_dynamic = false;
    warn_unused(m, "activation", fmt::format("{} quantizes weights only", algo_name));
  }
  if (m.has_value("kv_cache"))
    problem(m.key_path("kv_cache"), "must be absent (no KV-cache scales are produced for Hunyuan)", "no kv_cache key");

  // group_size
  const std::optional<int64_t> gs = get_int(m, "group_size");
  if (gptq || awq) {
    if (out.weight == WeightGranularity::kPerGroup) {
      if (method_ok) require(m, "group_size", "32, 64, 128 or -1 (= 128)");
      if (gs) {
        if (*gs == -1)
          out.group_size = 128;  // AngelSlim rule, kept (SPEC 2.4)
        else if (*gs == 32 || *gs == 64 || *gs == 128)
          out.group_size = static_cast<int>(*gs);
        else
          problem(m.key_path("group_size"), fmt::format("is {}", *gs), "32, 64, 128 or -1 (= 128)");
      }
    } else if (out.weight == WeightGranularity::kPerChannel) {
      out.group_size = -1;  // per-channel: one group spanning the input
      if (gs && *gs != -1) warn(m.key_path("group_size"), "ignored with weight per-channel (one group per row)");
    }  // else: weight missing or invalid, already reported
  } else {
    out.group_size = 0;
    if (fp8) warn_unused(m, "group_size", "FP8 scales are per-tensor or per-channel");
  }

  // zero_point / mse_range, with the top-level fallback for AWQ [AS-Q16].
  auto fallback_bool = [&](std::string_view key) -> std::optional<bool> {
    std::optional<bool> inner = get_bool(m, key);
    std::optional<bool> outer = get_bool(q, key);
    if (!awq) {
      if (q.has_value(key) && algo_known_)
        warn(q.key_path(key), fmt::format("ignored (only AWQ reads the top-level key; use quant_method.{})", key));
      return inner;
    }
    if (inner) {
      if (outer) warn(q.key_path(key), fmt::format("ignored: quant_method.{} is used", key));
      return inner;
    }
    if (outer && !m.has(key)) {
      warn(q.key_path(key), fmt::format("used because quant_method.{} is absent (AngelSlim ignores this key)", key));
      return outer;
    }
    return std::nullopt;
  };
  const std::optional<bool> zp = fallback_bool("zero_point");
  const std::optional<bool> mse = fallback_bool("mse_range");
  if (gptq) {
    out.zero_point = zp.value_or(false);
    warn_unused(m, "mse_range", "read by AWQ only");
  } else if (awq) {
    if (!zp && !m.has("zero_point") && !q.has("zero_point") && method_ok)
      problem(m.key_path("zero_point"), "missing", "true or false");
    if (!mse && !m.has("mse_range") && !q.has("mse_range") && method_ok)
      problem(m.key_path("mse_range"), "missing", "true or false");
    out.zero_point = zp.value_or(true);
    out.mse_range = mse.value_or(false);
  } else if (fp8) {
    warn_unused(m, "zero_point", "FP8 is symmetric");
    warn_unused(m, "mse_range", "read by AWQ only");
  }

  // weight_rounding (ext): fp8_static / AWQ weights rounded to nearest (default) or with GPTQ's error feedback
  if (auto v = get_string(m, "weight_rounding")) {
    if (*v != "rtn" && *v != "gptq")
      problem(m.key_path("weight_rounding"), fmt::format("'{}' is not supported", *v), "rtn or gptq");
    else if (*v == "gptq" && out.algo == QuantAlgo::kFp8Dynamic)
      problem(m.key_path("weight_rounding"), "gptq needs calibration data, which fp8_dynamic does not read",
              "rtn, or name: fp8_static");
    else if (fp8 || out.algo == QuantAlgo::kAwq)
      out.gptq_rounding = *v == "gptq";
    else if (algo_known_)
      warn_unused(m, "weight_rounding", "read by FP8 and AWQ only (GPTQ rounds with GPTQ)");
  }
  const bool gptq_rounded = out.gptq_rounding;  // set for fp8_static / AWQ only; reads damp_percent

  // GPTQ-only keys
  if (auto v = get_bool(m, "actorder"); v && gptq) out.actorder = *v;
  if (auto v = get_bool(m, "desc_act"); v && gptq) out.desc_act = *v;
  if (auto v = get_bool(m, "dequant_to_bf16"); v && gptq) out.dequant_to_bf16 = *v;
  if (auto v = get_float(m, "damp_percent")) {
    if (!(*v > 0.0 && *v <= 1.0))
      problem(m.key_path("damp_percent"), fmt::format("is {}", *v), "a number in (0, 1]");
    else if (gptq || gptq_rounded)
      out.damp_percent = *v;
  }
  if (algo_known_ && !gptq)
    for (std::string_view k : {"actorder", "desc_act", "dequant_to_bf16", "damp_percent"})
      if (k != "damp_percent" || !gptq_rounded) warn_unused(m, k, "read by GPTQ only");
  if (auto v = get_float(m, "moe_min_token_fraction")) {
    if (!(*v >= 0.0 && *v <= 1.0))
      problem(m.key_path("moe_min_token_fraction"), fmt::format("is {}", *v), "a number in [0, 1]");
    else if (gptq || awq)
      out.moe_min_token_fraction = *v;
  }
  if (fp8) warn_unused(m, "moe_min_token_fraction", "read by GPTQ and AWQ only");
  if (auto v = get_string(m, "awq_output_dtype")) {
    if (*v == "float16")
      out.awq_output_dtype = AwqOutputDtype::kFloat16;
    else if (*v == "bfloat16")
      out.awq_output_dtype = AwqOutputDtype::kBfloat16;
    else
      problem(m.key_path("awq_output_dtype"), fmt::format("'{}' is not supported", *v), "float16 or bfloat16");
  }
  if (algo_known_ && !awq) warn_unused(m, "awq_output_dtype", "read by AWQ only");

  // SPEC 2.6 combinations
  if (gptq && out.zero_point && out.bits == 8)
    problem(m.key_path("zero_point"),
            "true is not supported with bits 8 (vLLM has no 8-bit Marlin kernel with zero points)",
            "zero_point: false for INT8 GPTQ");
  if (gptq && out.zero_point && out.desc_act)
    problem(m.key_path("desc_act"),
            "true is not supported with zero_point: true (asymmetric GPTQ is written in the AWQ layout)",
            "desc_act: false");
  if (awq && out.bits == 8 && out.zero_point) {
    out.zero_point = false;
    warn(m.key_path("zero_point"), "forced to false: 8-bit AWQ is written as symmetric GPTQ");
  }

  // ignore_layers
  if (q.has_value("ignore_layers")) {
    const YAML::Node n = q.get("ignore_layers");
    const std::string ip = q.key_path("ignore_layers");
    if (!n.IsSequence()) {
      problem(ip, fmt::format("is {}", describe(n)), "a list of module names");
    } else {
      for (size_t i = 0; i < n.size(); ++i) {
        const std::string ep = fmt::format("{}[{}]", ip, i);
        if (!n[i].IsScalar() || is_null(n[i])) {
          problem(ep, fmt::format("is {}", describe(n[i])), "a module name or 're:<regex>'");
          continue;
        }
        if (auto err = ignore_entry_error(n[i].Scalar())) {
          problem(ep, *err, "a module name or 're:<regex>'");
          continue;
        }
        out.ignore_layers.push_back(n[i].Scalar());
      }
    }
  }

  // save_name (FP8)
  if (auto v = get_string(q, "save_name")) {
    if (*v == "compressed-tensors")
      out.save_name = SaveName::kCompressedTensors;
    else if (*v == "fp8")
      out.save_name = SaveName::kFp8;
    else
      problem(q.key_path("save_name"), fmt::format("'{}' is not supported", *v), "compressed-tensors or fp8");
  }
  if (algo_known_ && !fp8) warn_unused(q, "save_name", fmt::format("{} has one output format", algo_name));

  // quant_vit (FP8 on HunyuanVL)
  if (auto v = get_bool(q, "quant_vit"); v && *v) {
    if (algo_known_ && !fp8)
      warn(q.key_path("quant_vit"),
           fmt::format("ignored: {} leaves the vision tower unquantized (FP8 only)", algo_name));
    else if (cfg_->model.name != ModelName::kHunyuanVL && model_known_)
      warn(q.key_path("quant_vit"), "ignored: the model has no vision tower");
    else if (cfg_->model.name == ModelName::kHunyuanVL)
      out.quant_vit = true;
  }

  // quant_helpers: SmoothQuant and other helpers are out of scope.
  if (q.has_value("quant_helpers")) {
    const YAML::Node n = q.get("quant_helpers");
    const std::string hp = q.key_path("quant_helpers");
    std::vector<std::string> helpers;
    if (n.IsScalar()) {
      helpers.push_back(n.Scalar());
    } else if (n.IsSequence()) {
      for (const auto& h : n) helpers.push_back(h.IsScalar() ? h.Scalar() : describe(h));
    } else {
      problem(hp, fmt::format("is {}", describe(n)), "an empty list");
    }
    for (const std::string& h : helpers)
      problem(hp,
              h == "smooth" ? std::string("'smooth' is not supported (SmoothQuant is out of scope)")
                            : fmt::format("'{}' is not supported", h),
              "no quant_helpers");
  }
}

void Loader::parse_dataset(const Section& root) {
  const QuantSection& quant = cfg_->quant;
  if (algo_known_ && !quant.needs_dataset()) {
    if (root.has_value("dataset")) warn("dataset", fmt::format("ignored: {} needs no calibration data", quant.name));
    return;
  }
  if (!root.has_value("dataset")) {
    if (algo_known_)
      problem("dataset", "missing",
              fmt::format("a dataset section with name and data_path: {} calibrates on data", quant.name));
    return;
  }
  const Section d = section(root.get("dataset"), "dataset",
                            {"name", "data_path", "max_seq_length", "num_samples", "batch_size", "shuffle"},
                            {"is_sft_data", "inference_settings"});
  DatasetSection out;
  if (!d.ok) return;
  require(d, "name", "TextDataset, MultiModalDataset or auto");
  if (auto v = get_string(d, "name")) {
    out.name = *v;
    const bool vl = cfg_->model.name == ModelName::kHunyuanVL;
    if (*v == "TextDataset" || *v == "text") {
      out.kind = DatasetKind::kText;
    } else if (*v == "MultiModalDataset" || *v == "multimodal") {
      out.kind = DatasetKind::kMultiModal;
      if (!vl && model_known_)
        problem(d.key_path("name"), fmt::format("'{}' needs a vision model", *v),
                "TextDataset for HunyuanDense and HunyuanMoE");
    } else if (*v == "auto") {
      out.kind = vl ? DatasetKind::kMultiModal : DatasetKind::kText;
    } else {
      problem(d.key_path("name"), fmt::format("'{}' is not a supported dataset", *v),
              "TextDataset (text), MultiModalDataset (multimodal) or auto");
    }
  }
  require(d, "data_path", "a local .jsonl file");
  if (auto v = get_string(d, "data_path")) {
    const std::string dp = d.key_path("data_path");
    const fs::path p(*v);
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
    std::error_code ec;
    fs::path resolved;
    if (p.is_absolute()) {
      resolved = p;
    } else if (fs::exists(p, ec)) {
      resolved = fs::absolute(p, ec);
    } else if (fs::exists(cfg_->config_path.parent_path() / p, ec)) {
      resolved = fs::absolute(cfg_->config_path.parent_path() / p, ec);
    } else {
      resolved = fs::absolute(p, ec);
    }
    resolved = resolved.lexically_normal();
    const bool exists = fs::exists(resolved, ec);
    if (v->empty()) {
      problem(dp, "is empty", "a local .jsonl file");
    } else if (ext == ".parquet") {
      problem(dp, fmt::format("'{}': Parquet is not supported; convert it to jsonl (one JSON object per line)", *v),
              "a local .jsonl file");
    } else if (exists && fs::is_directory(resolved, ec)) {
      problem(dp, fmt::format("'{}' is a directory", *v), "a local .jsonl file");
    } else if (ext != ".jsonl" && ext != ".json") {
      problem(dp,
              exists ? fmt::format("'{}' is not a .jsonl file", *v)
                     : fmt::format("'{}' is not a local file (Hub datasets are not supported; convert to jsonl)", *v),
              "a local .jsonl file (or .json with one object per line)");
    } else {
      if (!exists)
        warn(dp,
             fmt::format("'{}' not found (looked relative to the current directory and to the YAML's directory)", *v));
      out.data_path = resolved.string();
    }
  }
  if (auto v = get_int(d, "max_seq_length")) {
    if (*v < 2 || *v > (int64_t{1} << 30))
      problem(d.key_path("max_seq_length"), fmt::format("is {}", *v), "an integer >= 2 (a sample needs 2 tokens)");
    else
      out.max_seq_length = static_cast<int>(*v);
  }
  if (auto v = get_int(d, "num_samples")) {
    if (*v < 1 || *v > (int64_t{1} << 30))
      problem(d.key_path("num_samples"), fmt::format("is {}", *v), "a positive integer");
    else
      out.num_samples = static_cast<int>(*v);
  }
  if (auto v = get_int(d, "batch_size")) {
    if (*v < 1 || *v > (int64_t{1} << 20))
      problem(d.key_path("batch_size"), fmt::format("is {}", *v), "a positive integer");
    else
      out.batch_size = static_cast<int>(*v);
  }
  if (auto v = get_bool(d, "shuffle")) out.shuffle = *v;
  cfg_->global.max_seq_length = out.max_seq_length;  // SPEC 2.2: the dataset's value wins
  cfg_->dataset = std::move(out);
}

std::string read_file_text(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw IoError(fmt::format("config '{}': no such file", path.string()));
  if (fs::is_directory(path, ec)) throw IoError(fmt::format("config '{}': is a directory", path.string()));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("config '{}': cannot open: {}", path.string(), std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError(fmt::format("config '{}': read failed", path.string()));
  return ss.str();
}

}  // namespace

RunConfig load_run_config(const fs::path& path, const CliOverrides& overrides) {
  return parse_run_config(read_file_text(path), path, overrides);
}

RunConfig parse_run_config(const std::string& text, const fs::path& path, const CliOverrides& overrides) {
  const std::string file = path.string();
  // yaml-cpp passes bytes through unchecked (and turns a NUL into a lone 0x85), but every string goes into
  // quant_report.json, which must be UTF-8 (found by fuzz/fuzz_run_config.cpp). UTF-16/32 files (with a byte
  // order mark) are converted by yaml-cpp, which also rejects escapes of surrogates.
  const bool wide_bom = text.starts_with("\xFE\xFF") || text.starts_with("\xFF\xFE") ||
                        text.starts_with(std::string_view("\0\0\xFE\xFF", 4));
  if (!wide_bom) {
    std::optional<std::size_t> bad = find_invalid_utf8(text);
    const char* what = "not UTF-8 text";
    for (std::size_t i = 0; i < bad.value_or(text.size()); ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F) {
        bad = i;
        what = "a control character (YAML allows only printable characters)";
        break;
      }
    }
    if (bad) {
      const auto upto = text.begin() + static_cast<std::ptrdiff_t>(*bad);
      const auto line = std::count(text.begin(), upto, '\n') + 1;
      const auto col = upto - std::find(std::make_reverse_iterator(upto), text.rend(), '\n').base() + 1;
      throw InvalidInput(fmt::format("{}:{}:{}: {} (byte 0x{:02X}); save the config as UTF-8 text", file, line, col,
                                     what, static_cast<unsigned char>(text[*bad])));
    }
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw InvalidInput(fmt::format("{}:{}:{}: YAML syntax error: {}", file, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  RunConfig cfg;
  cfg.config_path = path;
  Loader loader(file, overrides, &cfg);
  loader.run(root);
  const auto& problems = loader.problems();
  if (!problems.empty()) {
    std::string msg = fmt::format("{}: {} problem{}:", file, problems.size(), problems.size() == 1 ? "" : "s");
    for (const std::string& p : problems) msg += "\n" + p;
    throw InvalidInput(msg);
  }
  return cfg;
}

}  // namespace angelslim
