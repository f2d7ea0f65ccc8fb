// FP8 static/dynamic end to end on the fixtures: output layout and config per SPEC 5.2 (read back from disk),
// scale sharing per SPEC 4.3.3, perplexity through the dequantizing loader, and output-directory safety.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "angelslim/core/error.h"
#include "angelslim/io/safetensors.h"
#include "e2e_util.h"

namespace angelslim {
namespace {

using nlohmann::json;
using test::TmpDir;
namespace fs = std::filesystem;
using test::kFp8Dynamic;
using test::kFp8Static;


float scalar(const TensorStore& st, const std::string& n) { return st.get(n).to_f32().at(0); }

TEST(Fp8E2E, DenseStaticLayoutConfigAndPerplexity) {
  TmpDir d("fp8");
  const auto cfg = test::write_config(d.path(), "dense_fp8", "hy-dense-tiny", "HunyuanDense", kFp8Static);
  RunOptions ro;
  ro.config_path = cfg;
  ASSERT_EQ(run_pipeline(ro), 0);
  const fs::path out = d.path() / "out" / "dense_fp8";
  ASSERT_TRUE(fs::exists(out / "config.json"));
  // Nothing temporary left next to the output.
  for (const auto& e : fs::directory_iterator(d.path() / "out"))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();

  const auto c = json::parse(read_file(out / "config.json"));
  const json want = json::parse(R"({
    "quant_method": "compressed-tensors", "ignore": ["lm_head"],
    "config_groups": {"group_0": {
      "weights": {"num_bits": 8, "strategy": "tensor", "dynamic": false, "type": "float", "symmetric": true},
      "input_activations": {"num_bits": 8, "strategy": "tensor", "dynamic": false, "type": "float", "symmetric": true},
      "output_activations": null, "targets": ["Linear"]}},
    "kv_cache_scheme": null, "format": "naive-quantized", "quantization_status": "compressed"})");
  EXPECT_EQ(c["quantization_config"], want);
  EXPECT_EQ(c["hidden_size"], 384);  // source keys preserved
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                        "quant_report.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;

  TensorStore st(out);
  TensorStore src(test::kData + "/fixtures/hy-dense-tiny");
  EXPECT_FALSE(st.has("lm_head.weight"));
  for (int l = 0; l < 6; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      const auto& w = st.get(p + n + ".weight");
      EXPECT_EQ(w.dtype, DType::kF8E4M3);
      EXPECT_EQ(w.shape, src.get(p + n + ".weight").shape);
      EXPECT_EQ(st.get(p + n + ".weight_scale").dtype, DType::kF32);
      EXPECT_EQ(st.get(p + n + ".weight_scale").shape, std::vector<int64_t>{1});
      EXPECT_EQ(st.get(p + n + ".input_scale").shape, std::vector<int64_t>{1});
      EXPECT_GT(scalar(st, p + n + ".input_scale"), 0.0f);
    }
    // Fused groups share scales (SPEC 4.3.3).
    EXPECT_EQ(scalar(st, p + "self_attn.q_proj.weight_scale"), scalar(st, p + "self_attn.k_proj.weight_scale"));
    EXPECT_EQ(scalar(st, p + "self_attn.q_proj.weight_scale"), scalar(st, p + "self_attn.v_proj.weight_scale"));
    EXPECT_EQ(scalar(st, p + "mlp.gate_proj.weight_scale"), scalar(st, p + "mlp.up_proj.weight_scale"));
    EXPECT_EQ(scalar(st, p + "self_attn.q_proj.input_scale"), scalar(st, p + "self_attn.v_proj.input_scale"));
    // The shared q/k/v weight scale is the max abs weight of the three / 448.
    float amax = 0;
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
      for (float v : src.get(p + n + ".weight").to_f32()) amax = std::max(amax, std::fabs(v));
    EXPECT_EQ(scalar(st, p + "self_attn.q_proj.weight_scale"), amax / 448.0f);
    // Norms are byte-identical copies.
    const auto& a = st.get(p + "input_layernorm.weight");
    const auto& b = src.get(p + "input_layernorm.weight");
    ASSERT_EQ(a.nbytes, b.nbytes);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0);
  }
  // Perplexity through the loader that dequantizes and fake-quantizes activations (vLLM semantics):
  // FP8 on this model costs a fraction of a percent; 1% is the bound.
  if (test::kCheckQuality) {
    const double base = test::heldout_ppl(test::kData + "/fixtures/hy-dense-tiny");
    const double q = test::heldout_ppl(out);
    std::printf("hy-dense-tiny fp8_static: ppl %.4f -> %.4f (%+.3f%%)\n", base, q, (q / base - 1) * 100);
    EXPECT_LT(q / base - 1, 0.01);
    EXPECT_NE(q, base);  // activations and weights really are quantized
  }

  // An existing non-empty output is refused without --overwrite, and accepted with it.
  EXPECT_THROW(run_pipeline(ro), InvalidInput);
  ro.overwrite = true;
  EXPECT_EQ(run_pipeline(ro), 0);
}

TEST(Fp8E2E, MoeStaticSharesExpertInputScales) {
  TmpDir d("fp8moe");
  const auto cfg = test::write_config(d.path(), "moe_fp8", "hy-moe-tiny", "HunyuanMoE", kFp8Static);
  RunOptions ro;
  ro.config_path = cfg;
  ASSERT_EQ(run_pipeline(ro), 0);
  const fs::path out = d.path() / "out" / "moe_fp8";
  const auto c = json::parse(read_file(out / "config.json"));
  const auto ign = c["quantization_config"]["ignore"];
  EXPECT_EQ(ign, json({"lm_head", "model.layers.0.mlp.gate.wg", "model.layers.1.mlp.gate.wg",
                       "model.layers.2.mlp.gate.wg", "model.layers.3.mlp.gate.wg"}));
  TensorStore st(out);
  TensorStore src(test::kData + "/fixtures/hy-moe-tiny");
  for (int l = 0; l < 4; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
    // The router stays in its source dtype and bytes.
    EXPECT_EQ(st.get(p + "gate.wg.weight").dtype, src.get(p + "gate.wg.weight").dtype);
    const float gu = scalar(st, p + "experts.0.gate_proj.input_scale");
    const float dn = scalar(st, p + "experts.0.down_proj.input_scale");
    for (int e = 0; e < 8; ++e) {
      const std::string x = p + "experts." + std::to_string(e) + ".";
      EXPECT_EQ(scalar(st, x + "gate_proj.input_scale"), gu);
      EXPECT_EQ(scalar(st, x + "up_proj.input_scale"), gu);
      EXPECT_EQ(scalar(st, x + "down_proj.input_scale"), dn);
      EXPECT_EQ(scalar(st, x + "gate_proj.weight_scale"), scalar(st, x + "up_proj.weight_scale"));
      EXPECT_EQ(st.get(x + "down_proj.weight").dtype, DType::kF8E4M3);
    }
    EXPECT_EQ(st.get(p + "shared_mlp.down_proj.weight").dtype, DType::kF8E4M3);
  }
  if (test::kCheckQuality) {
    const double base = test::heldout_ppl(test::kData + "/fixtures/hy-moe-tiny");
    const double q = test::heldout_ppl(out);
    std::printf("hy-moe-tiny fp8_static: ppl %.4f -> %.4f (%+.3f%%)\n", base, q, (q / base - 1) * 100);
    EXPECT_LT(q / base - 1, 0.01);
  }
}

TEST(Fp8E2E, DynamicHasNoInputScale) {
  TmpDir d("fp8dyn");
  const auto cfg = test::write_config(d.path(), "dense_fp8_dyn", "hy-dense-tiny", "HunyuanDense", kFp8Dynamic);
  RunOptions ro;
  ro.config_path = cfg;
  ASSERT_EQ(run_pipeline(ro), 0);
  const fs::path out = d.path() / "out" / "dense_fp8_dyn";
  const auto c = json::parse(read_file(out / "config.json"));
  EXPECT_EQ(c["quantization_config"]["config_groups"]["group_0"]["input_activations"]["dynamic"], true);
  TensorStore st(out);
  EXPECT_FALSE(st.has("model.layers.0.self_attn.q_proj.input_scale"));
  EXPECT_EQ(st.get("model.layers.0.self_attn.q_proj.weight").dtype, DType::kF8E4M3);
  if (test::kCheckQuality) {
    const double base = test::heldout_ppl(test::kData + "/fixtures/hy-dense-tiny", 2);
    const double q = test::heldout_ppl(out, 2);
    EXPECT_LT(q / base - 1, 0.01);
  }
}

TEST(Fp8E2E, FailureLeavesNoOutput) {
  TmpDir d("fp8bad");
  const auto cfg = test::write_config(d.path(), "bad", "hy-dense-tiny", "HunyuanDense", kFp8Static);
  // Point the dataset at a file that is not JSON lines: the run fails after the output dir was prepared.
  {
    std::ofstream f(d.path() / "bad.jsonl");
    f << "{\"text\": \"fine\"}\nnot json at all\n";
  }
  std::string y = read_file(cfg);
  y.replace(y.find(test::kData + "/calib/sharegpt_gpt4_256.jsonl"),
            (test::kData + "/calib/sharegpt_gpt4_256.jsonl").size(), (d.path() / "bad.jsonl").string());
  write_file_atomic(cfg, y);
  RunOptions ro;
  ro.config_path = cfg;
  EXPECT_THROW(run_pipeline(ro), InvalidInput);
  EXPECT_FALSE(fs::exists(d.path() / "out" / "bad"));
  if (fs::exists(d.path() / "out"))
    for (const auto& e : fs::directory_iterator(d.path() / "out")) ADD_FAILURE() << "left behind: " << e.path();
}

}  // namespace
}  // namespace angelslim
