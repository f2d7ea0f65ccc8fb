// The YAML schema (SPEC 2): every shipped config parses, defaults and the group_size rule match the
// SPEC tables, data_path resolution order, every rejected combination of SPEC 2.6 is reported with its
// YAML path, and one file with many mistakes reports all of them.
#include "angelslim/config/run_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "angelslim/core/error.h"

namespace angelslim {
namespace {
namespace fs = std::filesystem;

const fs::path kData = fs::path(ANGELSLIM_TEST_DATA).lexically_normal();
const fs::path kRoot = (kData / ".." / "..").lexically_normal();
const std::string kDense = (kData / "fixtures" / "hy-dense-tiny").string();
const std::string kCalib = (kData / "calib" / "sharegpt_gpt4_256.jsonl").string();

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("angelslim_cfg_" + std::to_string(::getpid()) + "_" + info->name() + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path write(const std::string& rel, const std::string& text) const {
    const fs::path p = path_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p;
  }

 private:
  fs::path path_;
};

// Changes the working directory for a scope.
class ScopedCwd {
 public:
  explicit ScopedCwd(const fs::path& p) : old_(fs::current_path()) { fs::current_path(p); }
  ~ScopedCwd() { fs::current_path(old_); }

 private:
  fs::path old_;
};

// Loads `path` expecting InvalidInput; returns the problem lines after checking the summary line.
std::vector<std::string> problems_of(const fs::path& path, const CliOverrides& ov = {}) {
  try {
    load_run_config(path, ov);
  } catch (const InvalidInput& e) {
    std::vector<std::string> lines;
    std::istringstream in(e.what());
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    EXPECT_FALSE(lines.empty());
    if (lines.empty()) return {};
    const size_t n = lines.size() - 1;
    EXPECT_EQ(lines[0], path.string() + ": " + std::to_string(n) + (n == 1 ? " problem:" : " problems:"));
    lines.erase(lines.begin());
    for (const std::string& l : lines) EXPECT_EQ(l.rfind(path.string() + ": ", 0), 0u) << l;
    return lines;
  }
  ADD_FAILURE() << "no InvalidInput for " << path;
  return {};
}

// The YAML path of each problem line ("<file>: <path>: ...").
std::vector<std::string> paths_of(const fs::path& file, const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (const std::string& l : lines) {
    const std::string rest = l.substr(file.string().size() + 2);
    out.push_back(rest.substr(0, rest.find(": ")));
  }
  return out;
}

std::string dataset_block(const std::string& data_path = kCalib) {
  return "dataset:\n  name: TextDataset\n  data_path: " + data_path + "\n";
}

// A full config: the given quantization block (indented under compression.quantization) + dataset.
std::string config_with(const std::string& quant, const std::string& extra = dataset_block(),
                        const std::string& model_name = "HunyuanDense") {
  return "model:\n  name: " + model_name + "\n  model_path: " + kDense +
         "\ncompression:\n  name: PTQ\n  quantization:\n" + quant + extra;
}

const char* const kGptq4 =
    "    name: int4_gptq\n    bits: 4\n    quant_method:\n      weight: per-group\n      group_size: 128\n";

TEST(RunConfig, EveryShippedConfigParses) {
  const fs::path dir = kRoot / "configs";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  CliOverrides ov;
  ov.model_path = kDense;  // real-model paths (tencent/...) are Hub ids, not local directories
  int count = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    ++count;
    SCOPED_TRACE(e.path().string());
    RunConfig cfg;
    ASSERT_NO_THROW(cfg = load_run_config(e.path(), ov));
    // The directory names the algorithm (configs/<family>/<algo>/x.yaml) or the stem ends with it.
    const std::string stem = e.path().stem().string();
    const std::string where = e.path().parent_path().filename().string() + "/" + stem;
    const bool is_fp8s = where.find("fp8_static") != std::string::npos;
    const bool is_fp8d = where.find("fp8_dynamic") != std::string::npos;
    const bool is_gptq = where.find("int4_gptq") != std::string::npos;
    const bool is_awq = where.find("int4_awq") != std::string::npos;
    ASSERT_EQ(is_fp8s + is_fp8d + is_gptq + is_awq, 1);
    const QuantAlgo want = is_fp8s   ? QuantAlgo::kFp8Static
                           : is_fp8d ? QuantAlgo::kFp8Dynamic
                           : is_gptq ? QuantAlgo::kGptq
                                     : QuantAlgo::kAwq;
    EXPECT_EQ(cfg.quant.algo, want);
    EXPECT_EQ(cfg.quant.bits, cfg.quant.is_fp8() ? 8 : 4);
    EXPECT_EQ(cfg.quant.group_size, cfg.quant.is_fp8() ? 0 : 128);
    EXPECT_EQ(cfg.quant.zero_point, is_awq);
    EXPECT_EQ(cfg.dataset.has_value(), !is_fp8d);
    EXPECT_EQ(cfg.model.model_path, kDense);
    EXPECT_EQ(cfg.output_dir(), fs::path(cfg.global.save_path) / stem);
    ASSERT_FALSE(cfg.quant.ignore_layers.empty());
    EXPECT_EQ(cfg.quant.ignore_layers[0], "lm_head");
    // The only acceptable warnings: AngelSlim's ./dataset/... path that this checkout does not hold.
    for (const std::string& w : cfg.warnings) EXPECT_NE(w.find("dataset.data_path: "), std::string::npos) << w;
  }
  EXPECT_EQ(count, 21 + 4 + 7);  // configs/hunyuan, configs/hunyuan_ocr, configs/examples
}

TEST(RunConfig, ExamplesRunFromTheRepositoryRoot) {
  ScopedCwd cwd(kRoot);
  for (const char* stem :
       {"hy_dense_tiny_fp8_static", "hy_dense_tiny_fp8_dynamic", "hy_moe_tiny_fp8_static", "hy_dense_tiny_int4_gptq",
        "hy_moe_tiny_int4_gptq", "hy_dense_tiny_int4_awq", "hy_moe_tiny_int4_awq"}) {
    SCOPED_TRACE(stem);
    const fs::path p = fs::path("configs/examples") / (std::string(stem) + ".yaml");
    RunConfig cfg;
    ASSERT_NO_THROW(cfg = load_run_config(p));
    EXPECT_TRUE(cfg.warnings.empty()) << cfg.warnings.front();
    EXPECT_EQ(cfg.output_dir(), fs::path("./output") / stem);
    const bool moe = std::string(stem).find("moe") != std::string::npos;
    EXPECT_EQ(cfg.model.name, moe ? ModelName::kHunyuanMoE : ModelName::kHunyuanDense);
    EXPECT_EQ(cfg.model.model_path, moe ? "tests/data/fixtures/hy-moe-tiny" : "tests/data/fixtures/hy-dense-tiny");
    if (cfg.dataset) {
      EXPECT_EQ(fs::path(cfg.dataset->data_path), kCalib);  // resolved to an absolute path
      EXPECT_EQ(cfg.dataset->max_seq_length, 512);
      // The dense GPTQ example calibrates on the whole 256-record file (bench/RESULTS.md, issue 4's bar).
      EXPECT_EQ(cfg.dataset->num_samples, std::string(stem) == "hy_dense_tiny_int4_gptq" ? 256 : 128);
      EXPECT_EQ(cfg.global.max_seq_length, 512);  // SPEC 2.2: dataset.max_seq_length wins
    }
    const nlohmann::json j = cfg.to_json();
    EXPECT_EQ(j["compression"]["quantization"]["bits"], cfg.quant.bits);
    EXPECT_EQ(j["compression"]["quantization"]["quant_method"]["weight"], std::string(yaml_name(cfg.quant.weight)));
    EXPECT_EQ(j["output_dir"], cfg.output_dir().string());
    EXPECT_EQ(j["dataset"].is_null(), !cfg.dataset.has_value());
  }
}

TEST(RunConfig, Defaults) {
  TempDir t;
  // GPTQ with only the required keys.
  const fs::path p = t.write("my_run.yaml", config_with(kGptq4));
  RunConfig c = load_run_config(p);
  EXPECT_TRUE(c.warnings.empty());
  EXPECT_EQ(c.global.save_path, "./output");
  EXPECT_EQ(c.global.deploy_backend, DeployBackend::kVllm);
  EXPECT_EQ(c.global.seed, 42u);
  EXPECT_EQ(c.global.max_seq_length, 2048);
  EXPECT_EQ(c.model.torch_dtype, TorchDtype::kAuto);
  EXPECT_EQ(c.quant.name, "int4_gptq");
  EXPECT_EQ(c.quant.weight, WeightGranularity::kPerGroup);
  EXPECT_FALSE(c.quant.zero_point);
  EXPECT_TRUE(c.quant.actorder);
  EXPECT_FALSE(c.quant.desc_act);
  EXPECT_FALSE(c.quant.dequant_to_bf16);
  EXPECT_DOUBLE_EQ(c.quant.damp_percent, 0.01);
  EXPECT_DOUBLE_EQ(c.quant.moe_min_token_fraction, 0.005);
  EXPECT_EQ(c.quant.awq_output_dtype, AwqOutputDtype::kFloat16);
  EXPECT_TRUE(c.quant.ignore_layers.empty());
  EXPECT_EQ(c.quant.save_name, SaveName::kCompressedTensors);
  EXPECT_FALSE(c.quant.quant_vit);
  ASSERT_TRUE(c.dataset);
  EXPECT_EQ(c.dataset->kind, DatasetKind::kText);
  EXPECT_EQ(c.dataset->max_seq_length, 2048);
  EXPECT_EQ(c.dataset->num_samples, 256);
  EXPECT_EQ(c.dataset->batch_size, 1);
  EXPECT_FALSE(c.dataset->shuffle);
  EXPECT_EQ(c.output_dir(), fs::path("./output/my_run"));
  EXPECT_EQ(c.config_path, p);

  // fp8_dynamic: name and activation defaults; no dataset needed; bits always 8.
  c = load_run_config(
      t.write("d.yaml", config_with("    name: fp8_dynamic\n    quant_method:\n      weight: per-tensor\n", "")));
  EXPECT_EQ(c.quant.algo, QuantAlgo::kFp8Dynamic);
  EXPECT_TRUE(c.quant.activation_dynamic);
  EXPECT_EQ(c.quant.bits, 8);
  EXPECT_FALSE(c.dataset.has_value());
  EXPECT_TRUE(c.warnings.empty());
  // No name at all: fp8_dynamic (SPEC 2.4 default).
  c = load_run_config(t.write("n.yaml", config_with("    quant_method:\n      weight: per-channel\n", "")));
  EXPECT_EQ(c.quant.algo, QuantAlgo::kFp8Dynamic);
  EXPECT_EQ(c.quant.weight, WeightGranularity::kPerChannel);
  // int4_gptq without bits: 8 bits (AngelSlim default), with a warning.
  c = load_run_config(
      t.write("b.yaml",
              config_with("    name: int4_gptq\n    quant_method:\n      weight: per-group\n      group_size: 64\n")));
  EXPECT_EQ(c.quant.bits, 8);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("compression.quantization.bits: missing"), std::string::npos) << c.warnings[0];
  // Aliases: int8_gptq / int8_awq are 8-bit; dataset auto -> text for a text model; [PTQ] list form.
  c = load_run_config(t.write(
      "a.yaml", "model:\n  name: HunyuanDense\n  model_path: " + kDense +
                    "\ncompression:\n  name: [PTQ]\n  quantization:\n    name: int8_awq\n    quant_method:\n"
                    "      weight: per-group\n      group_size: 32\n      zero_point: false\n      mse_range: true\n"
                    "dataset:\n  name: auto\n  data_path: " +
                    kCalib + "\n  shuffle: yes\n"));
  EXPECT_EQ(c.quant.algo, QuantAlgo::kAwq);
  EXPECT_EQ(c.quant.bits, 8);
  EXPECT_EQ(c.quant.group_size, 32);
  EXPECT_TRUE(c.quant.mse_range);
  EXPECT_EQ(c.dataset->kind, DatasetKind::kText);
  EXPECT_TRUE(c.dataset->shuffle);
  EXPECT_TRUE(c.warnings.empty());
}

TEST(RunConfig, CliOverrides) {
  TempDir t;
  const fs::path p = t.write("cli.yaml", "global:\n  save_path: /nonexistent/out\n" + config_with(kGptq4));
  CliOverrides ov;
  ov.save_path = (t.path() / "out").string();
  RunConfig c = load_run_config(p, ov);
  EXPECT_EQ(c.output_dir(), t.path() / "out" / "cli");
  // --model-path replaces a model_path that does not exist (and may stand in for a missing one).
  const fs::path q = t.write("hub.yaml",
                             "model:\n  name: HunyuanDense\n  model_path: tencent/Hunyuan-7B-Instruct\n"
                             "compression:\n  name: PTQ\n  quantization:\n" +
                                 std::string(kGptq4) + dataset_block());
  EXPECT_EQ(paths_of(q, problems_of(q)), std::vector<std::string>{"model.model_path"});
  ov = {};
  ov.model_path = kDense;
  EXPECT_EQ(load_run_config(q, ov).model.model_path, kDense);
  const fs::path r = t.write("nomodelpath.yaml",
                             "model:\n  name: HunyuanDense\ncompression:\n  name: PTQ\n"
                             "  quantization:\n" +
                                 std::string(kGptq4) + dataset_block());
  EXPECT_EQ(paths_of(r, problems_of(r)), std::vector<std::string>{"model.model_path"});
  EXPECT_EQ(load_run_config(r, ov).model.model_path, kDense);
}

TEST(RunConfig, GroupSizeRule) {
  TempDir t;
  auto gptq = [&](const std::string& weight, const std::string& gs_line) {
    return t.write(
        "g.yaml",
        config_with("    name: int4_gptq\n    bits: 4\n    quant_method:\n      weight: " + weight + "\n" + gs_line));
  };
  EXPECT_EQ(load_run_config(gptq("per-group", "      group_size: -1\n")).quant.group_size, 128);  // AngelSlim rule
  EXPECT_EQ(load_run_config(gptq("per-group", "      group_size: 32\n")).quant.group_size, 32);
  EXPECT_EQ(load_run_config(gptq("per-group", "      group_size: 64\n")).quant.group_size, 64);
  EXPECT_EQ(load_run_config(gptq("per-group", "      group_size: 128\n")).quant.group_size, 128);
  // per-channel: one group spanning the input (-1 in the output), group_size not needed.
  RunConfig c = load_run_config(gptq("per-channel", ""));
  EXPECT_EQ(c.quant.group_size, -1);
  EXPECT_TRUE(c.warnings.empty());
  for (const char* bad : {"      group_size: 256\n", "      group_size: 0\n", "      group_size: -2\n",
                          "      group_size: 12.5\n", "      group_size: \"128\"\n", ""}) {
    SCOPED_TRACE(bad);
    const fs::path p = gptq("per-group", bad);
    EXPECT_EQ(paths_of(p, problems_of(p)),
              std::vector<std::string>{"compression.quantization.quant_method.group_size"});
  }
}

TEST(RunConfig, DataPathResolution) {
  TempDir t;
  const std::string line = "{\"text\": \"x\"}\n";
  t.write("yamldir/calib.jsonl", line);
  const fs::path p = t.write("yamldir/run.yaml", config_with(kGptq4, dataset_block("calib.jsonl")));
  t.write("cwd/other/keep.txt", "");
  {
    // Not under the CWD: falls back to the YAML's directory.
    ScopedCwd cwd(t.path() / "cwd");
    RunConfig c = load_run_config(p);
    EXPECT_EQ(fs::path(c.dataset->data_path), (t.path() / "yamldir" / "calib.jsonl").lexically_normal());
    EXPECT_TRUE(c.warnings.empty());
  }
  t.write("cwd/calib.jsonl", line);
  {
    // Present under the CWD: the CWD wins.
    ScopedCwd cwd(t.path() / "cwd");
    RunConfig c = load_run_config(p);
    EXPECT_EQ(fs::path(c.dataset->data_path), (t.path() / "cwd" / "calib.jsonl").lexically_normal());
  }
  {
    // Nowhere: CWD-relative absolute path, with a warning (the data loader reports the missing file).
    const fs::path q = t.write("yamldir/missing.yaml", config_with(kGptq4, dataset_block("sub/none.jsonl")));
    ScopedCwd cwd(t.path() / "cwd");
    RunConfig c = load_run_config(q);
    EXPECT_EQ(fs::path(c.dataset->data_path), (t.path() / "cwd" / "sub" / "none.jsonl").lexically_normal());
    ASSERT_EQ(c.warnings.size(), 1u);
    EXPECT_NE(c.warnings[0].find("dataset.data_path: 'sub/none.jsonl' not found"), std::string::npos) << c.warnings[0];
  }
  // Parquet and Hub ids are rejected.
  for (const char* dp : {"train.parquet", "anon8231489123/ShareGPT_Vicuna_unfiltered"}) {
    const fs::path q = t.write("yamldir/bad.yaml", config_with(kGptq4, dataset_block(dp)));
    EXPECT_EQ(paths_of(q, problems_of(q)), std::vector<std::string>{"dataset.data_path"}) << dp;
  }
}

// One config per rejected combination; each must report exactly the given YAML path.
TEST(RunConfig, RejectedCombinations) {
  TempDir t;
  struct Case {
    std::string yaml;
    std::string path;
    std::string what;  // a substring of the problem line
  };
  const std::string qm = "    quant_method:\n      weight: per-group\n      group_size: 128\n";
  const std::string fp8qm = "    quant_method:\n      weight: per-tensor\n";
  std::vector<Case> cases = {
      {config_with("    name: int4_gptq\n    bits: 8\n" + qm + "      zero_point: true\n"),
       "compression.quantization.quant_method.zero_point", "bits 8"},
      {config_with("    name: int4_gptq\n    bits: 4\n" + qm + "      zero_point: true\n      desc_act: true\n"),
       "compression.quantization.quant_method.desc_act", "zero_point"},
      {config_with("    name: int4_gptq\n    bits: 2\n" + qm), "compression.quantization.bits", "Marlin"},
      {config_with("    name: int4_awq\n    bits: 3\n" + qm + "      zero_point: true\n      mse_range: false\n"),
       "compression.quantization.bits", "Marlin"},
      {config_with("    name: int4_gptq\n    bits: 16\n" + qm), "compression.quantization.bits", "expected 4 or 8"},
      {config_with("    name: int8_gptq\n    bits: 4\n" + qm), "compression.quantization.bits", "8 bits"},
      {config_with("    name: fp8_static\n" + fp8qm), "compression.quantization.quant_method.activation", "missing"},
      {config_with("    name: fp8_static\n" + fp8qm + "      activation: per-token\n"),
       "compression.quantization.quant_method.activation", "per-token"},
      {config_with("    name: fp8_static\n" + fp8qm + "      activation: per-tensor\n      weight_rounding: awq\n"),
       "compression.quantization.quant_method.weight_rounding", "expected rtn or gptq"},
      {config_with("    name: fp8_dynamic\n" + fp8qm + "      weight_rounding: gptq\n", ""),
       "compression.quantization.quant_method.weight_rounding", "fp8_dynamic"},
      {config_with("    name: fp8_dynamic\n" + fp8qm + "      kv_cache: per-tensor\n", ""),
       "compression.quantization.quant_method.kv_cache", "must be absent"},
      {config_with("    name: fp8_static\n    quant_method:\n      weight: per-group\n      activation: per-tensor\n"),
       "compression.quantization.quant_method.weight", "per-group"},
      {config_with("    name: int4_gptq\n    bits: 4\n    quant_method:\n      weight: per-tensor\n"),
       "compression.quantization.quant_method.weight", "per-tensor"},
      {config_with("    name: int4_awq\n    bits: 4\n" + qm + "      mse_range: false\n"),
       "compression.quantization.quant_method.zero_point", "missing"},
      {config_with("    name: int4_awq\n    bits: 4\n" + qm + "      zero_point: true\n"),
       "compression.quantization.quant_method.mse_range", "missing"},
      {config_with("    name: int4_gptq\n    bits: 4\n"), "compression.quantization.quant_method", "missing"},
      {config_with("    name: int4_gptq\n    bits: 4\n" + qm, ""), "dataset", "missing"},
      {config_with("    name: int4_awq\n    bits: 4\n" + qm + "      zero_point: true\n      mse_range: true\n", ""),
       "dataset", "missing"},
      {config_with("    name: fp8_static\n" + fp8qm + "      activation: per-tensor\n", ""), "dataset", "missing"},
      {config_with(kGptq4, "dataset:\n  name: MultiModalDataset\n  data_path: " + kCalib + "\n"), "dataset.name",
       "vision"},
      {config_with(kGptq4, "dataset:\n  data_path: " + kCalib + "\n"), "dataset.name", "missing"},
      {config_with(kGptq4, "dataset:\n  name: TextDataset\n"), "dataset.data_path", "missing"},
      {config_with(std::string(kGptq4) + "    quant_helpers: [smooth]\n    smooth_alpha: 0.5\n"),
       "compression.quantization.quant_helpers", "SmoothQuant"},
      {config_with(std::string(kGptq4) + "    ignore_layers: [\"re:(unclosed\"]\n"),
       "compression.quantization.ignore_layers[0]", "invalid regex"},
      {config_with(std::string(kGptq4) + "    ignore_layers: lm_head\n"), "compression.quantization.ignore_layers",
       "a list"},
      {"global:\n  deploy_backend: trtllm\n" + config_with(kGptq4), "global.deploy_backend", "trtllm"},
      {config_with(kGptq4) + "inference:\n  anything: [1, 2]\ntraining:\n  x: 1\n", "training", "unknown key"},
      {"model:\n  name: HunyuanDense\n  model_path: " + kDense +
           "\n  name: HunyuanMoE\ncompression:\n  name: PTQ\n"
           "  quantization:\n" +
           kGptq4 + dataset_block(),
       "model.name", "duplicate key"},
      {"model:\n  name: Qwen3\n  model_path: " + kDense + "\ncompression:\n  name: PTQ\n  quantization:\n" + kGptq4 +
           dataset_block(),
       "model.name", "Qwen3"},
      {"model:\n  name: HunyuanDense\n  model_path: " + kDense +
           "/config.json\ncompression:\n  name: PTQ\n"
           "  quantization:\n" +
           kGptq4 + dataset_block(),
       "model.model_path", "not a directory"},
      {"model:\n  name: HunyuanDense\n  model_path: " + kDense + "\ncompression:\n  name: QAT\n  quantization:\n" +
           kGptq4 + dataset_block(),
       "compression.name", "QAT"},
      {"model:\n  name: HunyuanDense\n  model_path: " + kDense +
           "\ncompression:\n  name: PTQ\n  calibrate:\n    backend: vllm\n  quantization:\n" + kGptq4 + dataset_block(),
       "compression.calibrate.backend", "vllm"},
      {"model:\n  name: HunyuanDense\n  model_path: " + kDense + "\n", "compression", "missing"},
      // A section of the wrong shape is one problem, not a cascade of "missing" keys.
      {"model:\n  name: HunyuanDense\n  model_path: " + kDense +
           "\ncompression:\n  name: PTQ\n"
           "  quantization: fp8_static\n" +
           dataset_block(),
       "compression.quantization", "a mapping"},
      {"model: HunyuanDense\ncompression:\n  name: PTQ\n  quantization:\n" + std::string(kGptq4) + dataset_block(),
       "model", "a mapping"},
  };
  for (const char* name :
       {"fp8_lepto", "fp8_blockwise", "int8_dynamic", "w4a8_fp8", "w4a8i8", "int4_gptaq", "nvfp4", "nvfp4_awq", "daq"})
    cases.push_back({config_with(std::string("    name: ") + name + "\n" + qm), "compression.quantization.name",
                     "does not implement"});
  cases.push_back({config_with("    name: int5_magic\n" + qm), "compression.quantization.name", "not a known"});
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].yaml);
    const fs::path p = t.write("case" + std::to_string(i) + ".yaml", cases[i].yaml);
    const std::vector<std::string> lines = problems_of(p);
    ASSERT_EQ(lines.size(), 1u) << (lines.empty() ? "" : lines[0] + (lines.size() > 1 ? "\n" + lines[1] : ""));
    EXPECT_EQ(paths_of(p, lines)[0], cases[i].path) << lines[0];
    EXPECT_NE(lines[0].find(cases[i].what), std::string::npos) << lines[0];
  }
}

TEST(RunConfig, ManyMistakesAreAllReported) {
  TempDir t;
  const std::string yaml =
      "global:\n"
      "  save_path: ./out\n"
      "  deploy_backend: trtllm\n"  // invalid value
      "  sede: 3\n"                 // unknown key
      "model:\n"
      "  name: HunyuanDense\n"
      "  model_path: " +
      kDense +
      "\n"
      "  torch_dtype: int8\n"  // invalid value
      "compression:\n"
      "  name: QAT\n"  // rejected
      "  quantization:\n"
      "    name: int4_gptq\n"
      "    bits: 3\n"  // rejected
      "    quant_method:\n"
      "      weight: per-tensor\n"    // invalid for GPTQ
      "      group_size: 100\n"       // ignored (per-tensor is already wrong) -> no second report
      "      actorder: maybe\n"       // wrong type
      "      kv_cache: per-tensor\n"  // must be absent
      "    ignore_layers: lm_head\n"  // wrong type
      "dataset:\n"
      "  name: TextDataset\n"
      "  data_path: train.parquet\n"  // unsupported
      "  num_samples: 0\n"            // out of range
      "  batch_size: [1]\n";          // wrong type
  const fs::path p = t.write("many.yaml", yaml);
  const std::vector<std::string> lines = problems_of(p);
  const std::vector<std::string> expected = {"global.sede",
                                             "global.deploy_backend",
                                             "model.torch_dtype",
                                             "compression.name",
                                             "compression.quantization.bits",
                                             "compression.quantization.quant_method.weight",
                                             "compression.quantization.quant_method.kv_cache",
                                             "compression.quantization.quant_method.actorder",
                                             "compression.quantization.ignore_layers",
                                             "dataset.data_path",
                                             "dataset.num_samples",
                                             "dataset.batch_size"};
  std::vector<std::string> got = paths_of(p, lines);
  EXPECT_EQ(std::multiset<std::string>(got.begin(), got.end()),
            std::multiset<std::string>(expected.begin(), expected.end()));
  // Each line says what is expected.
  for (const std::string& l : lines) EXPECT_NE(l.find("(expected "), std::string::npos) << l;
  // The unknown key carries a suggestion.
  const auto sede = std::find_if(lines.begin(), lines.end(),
                                 [](const std::string& l) { return l.find("global.sede") != std::string::npos; });
  ASSERT_NE(sede, lines.end());
  EXPECT_NE(sede->find("did you mean 'seed'"), std::string::npos) << *sede;
}

TEST(RunConfig, Warnings) {
  TempDir t;
  const std::string awq_qm = "    quant_method:\n      weight: per-group\n      group_size: 128\n";
  // deploy_backend huggingface: accepted with a warning.
  RunConfig c = load_run_config(t.write("w1.yaml", "global:\n  deploy_backend: huggingface\n" + config_with(kGptq4)));
  EXPECT_EQ(c.global.deploy_backend, DeployBackend::kHuggingface);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("global.deploy_backend"), std::string::npos);
  // AWQ bits 8 forces zero_point false.
  c = load_run_config(t.write("w2.yaml", config_with("    name: int4_awq\n    bits: 8\n" + awq_qm +
                                                     "      zero_point: true\n      mse_range: false\n")));
  EXPECT_FALSE(c.quant.zero_point);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("quant_method.zero_point: forced to false"), std::string::npos) << c.warnings[0];
  // Top-level zero_point / mse_range used only when quant_method lacks them [AS-Q16].
  c = load_run_config(t.write("w3.yaml", config_with("    name: int4_awq\n    bits: 4\n    zero_point: false\n"
                                                     "    mse_range: true\n" +
                                                     awq_qm)));
  EXPECT_FALSE(c.quant.zero_point);
  EXPECT_TRUE(c.quant.mse_range);
  EXPECT_EQ(c.warnings.size(), 2u);
  c = load_run_config(t.write("w4.yaml", config_with("    name: int4_awq\n    bits: 4\n    zero_point: false\n" +
                                                     awq_qm + "      zero_point: true\n      mse_range: false\n")));
  EXPECT_TRUE(c.quant.zero_point);  // quant_method wins
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("compression.quantization.zero_point: ignored"), std::string::npos) << c.warnings[0];
  // FP8 bits other than 8: warned and ignored.
  c = load_run_config(t.write("w5.yaml", config_with("    name: fp8_dynamic\n    bits: 4\n    quant_method:\n"
                                                     "      weight: per-tensor\n",
                                                     "")));
  EXPECT_EQ(c.quant.bits, 8);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("compression.quantization.bits"), std::string::npos);
  // fp8_dynamic ignores a dataset section.
  c = load_run_config(t.write("w6.yaml", config_with("    name: fp8_dynamic\n    quant_method:\n"
                                                     "      weight: per-tensor\n")));
  EXPECT_FALSE(c.dataset.has_value());
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find(": dataset: ignored"), std::string::npos) << c.warnings[0];
  // quant_vit on a text model / with GPTQ: warned, stays false. On HunyuanVL + FP8: honoured.
  c = load_run_config(t.write("w7.yaml", config_with(std::string(kGptq4) + "    quant_vit: true\n")));
  EXPECT_FALSE(c.quant.quant_vit);
  EXPECT_EQ(c.warnings.size(), 1u);
  c = load_run_config(
      t.write("w8.yaml",
              config_with("    name: fp8_dynamic\n    quant_vit: true\n    quant_method:\n      weight: per-tensor\n",
                          "", "HunyuanVL")));
  EXPECT_TRUE(c.quant.quant_vit);
  EXPECT_TRUE(c.warnings.empty());
  // weight_rounding (ext): gptq on fp8_static is honoured with damp_percent, silently; on GPTQ it is warned.
  c = load_run_config(
      t.write("w9.yaml", config_with("    name: fp8_static\n    quant_method:\n      weight: per-tensor\n"
                                     "      activation: per-tensor\n      weight_rounding: gptq\n"
                                     "      damp_percent: 0.05\n")));
  EXPECT_TRUE(c.quant.gptq_rounding);
  EXPECT_DOUBLE_EQ(c.quant.damp_percent, 0.05);
  EXPECT_TRUE(c.warnings.empty()) << c.warnings[0];
  EXPECT_EQ(c.to_json()["compression"]["quantization"]["quant_method"]["weight_rounding"], "gptq");
  c = load_run_config(t.write("w10.yaml", config_with(std::string(kGptq4) + "      weight_rounding: gptq\n")));
  EXPECT_FALSE(c.quant.gptq_rounding);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("quant_method.weight_rounding: ignored"), std::string::npos) << c.warnings[0];
  // On AWQ it is honoured too (with damp_percent) and echoed; rtn is the default.
  const std::string awq =
      "    name: int4_awq\n    bits: 4\n    quant_method:\n      weight: per-group\n"
      "      group_size: 128\n      zero_point: true\n      mse_range: false\n";
  c = load_run_config(
      t.write("w11.yaml", config_with(awq + "      weight_rounding: gptq\n      damp_percent: 0.02\n")));
  EXPECT_TRUE(c.quant.gptq_rounding);
  EXPECT_DOUBLE_EQ(c.quant.damp_percent, 0.02);
  EXPECT_TRUE(c.warnings.empty()) << c.warnings[0];
  EXPECT_EQ(c.to_json()["compression"]["quantization"]["quant_method"]["weight_rounding"], "gptq");
  EXPECT_EQ(c.to_json()["compression"]["quantization"]["quant_method"]["damp_percent"], 0.02);
  c = load_run_config(t.write("w12.yaml", config_with(awq)));
  EXPECT_FALSE(c.quant.gptq_rounding);
  EXPECT_EQ(c.to_json()["compression"]["quantization"]["quant_method"]["weight_rounding"], "rtn");
}

TEST(RunConfig, SyntaxAndFileErrors) {
  TempDir t;
  // Line 3 holds an unterminated flow sequence; yaml-cpp reports the position where it gave up.
  const fs::path p = t.write("syntax.yaml", "model:\n  name: HunyuanDense\n  model_path: [a, b\n");
  try {
    load_run_config(p);
    FAIL() << "no exception";
  } catch (const InvalidInput& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(p.string() + ":", 0), 0u) << msg;
    EXPECT_NE(msg.find("YAML syntax error"), std::string::npos) << msg;
    // "<file>:<line>:<col>:" with a line inside the file (1-based).
    const std::string rest = msg.substr(p.string().size() + 1);
    const int line = std::stoi(rest);
    EXPECT_GE(line, 3) << msg;
    EXPECT_LE(line, 4) << msg;
  }
  const fs::path tab = t.write("tab.yaml", "model:\n  name: x\n\tbad: 1\n");
  try {
    load_run_config(tab);
    FAIL() << "no exception";
  } catch (const InvalidInput& e) {
    EXPECT_EQ(std::string(e.what()).rfind(tab.string() + ":3:", 0), 0u) << e.what();
  }
  EXPECT_THROW(load_run_config(t.path() / "absent.yaml"), IoError);
  EXPECT_EQ(problems_of(t.write("empty.yaml", "")).size(), 1u);
  EXPECT_EQ(paths_of(t.path() / "list.yaml", problems_of(t.write("list.yaml", "- a\n- b\n"))),
            std::vector<std::string>{"<document>"});
}

TEST(RunConfig, ToJsonEchoesDefaults) {
  TempDir t;
  const RunConfig c = load_run_config(t.write("j.yaml", config_with(kGptq4)));
  const nlohmann::json j = c.to_json();
  EXPECT_EQ(j["global"]["save_path"], "./output");
  EXPECT_EQ(j["global"]["seed"], 42);
  EXPECT_EQ(j["model"]["name"], "HunyuanDense");
  EXPECT_EQ(j["model"]["torch_dtype"], "auto");
  const nlohmann::json& q = j["compression"]["quantization"];
  EXPECT_EQ(q["name"], "int4_gptq");
  EXPECT_EQ(q["bits"], 4);
  EXPECT_EQ(q["quant_method"]["group_size"], 128);
  EXPECT_EQ(q["quant_method"]["actorder"], true);
  EXPECT_EQ(q["quant_method"]["zero_point"], false);
  EXPECT_DOUBLE_EQ(q["quant_method"]["damp_percent"].get<double>(), 0.01);
  EXPECT_FALSE(q["quant_method"].contains("activation"));  // FP8-only key
  EXPECT_FALSE(q["quant_method"].contains("mse_range"));   // AWQ-only key
  EXPECT_TRUE(q["save_name"].is_null());
  EXPECT_EQ(q["ignore_layers"], nlohmann::json::array());
  EXPECT_EQ(j["dataset"]["num_samples"], 256);
  EXPECT_EQ(j["dataset"]["kind"], "TextDataset");
}

}  // namespace
}  // namespace angelslim
