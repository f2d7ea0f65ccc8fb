// HunyuanOCR config parsing (SPEC 1.3, 1.4): the v1.0 flat layout (the synth preset), the transformers-5 nested
// layout, vision_config, and the errors for a missing vision_config or bad XD-RoPE sections.
#include <gtest/gtest.h>

#include "angelslim/core/error.h"
#include "angelslim/model/model_config.h"
#include "angelslim/model/synth.h"
#include "angelslim/model/vision.h"
#include "angelslim/pipeline/ocr.h"

namespace angelslim {
namespace {

using nlohmann::json;

json synth_ocr() {
  SynthOptions o;
  o.preset = "hunyuan-ocr";
  return json::parse(synth_config_json(o).dump());
}

TEST(OcrConfig, SynthPresetIsTheV1Layout) {
  const auto c = parse_model_config(synth_ocr(), "synth");
  EXPECT_EQ(c.family, ModelFamily::kOcr);
  EXPECT_EQ(c.architecture, "HunYuanVLForConditionalGeneration");
  EXPECT_EQ(c.d_model, 1024);
  EXPECT_EQ(c.d_ff, 3584);
  EXPECT_EQ(c.n_layers, 24);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope_kind, "xdrope");
  EXPECT_EQ(c.rope_base(), 11158840.0f);
  EXPECT_EQ(c.xdrope_section, (std::vector<int64_t>{16, 16, 16, 16}));
  EXPECT_EQ(c.image_start_id, 120118);
  EXPECT_EQ(c.image_end_id, 120119);
  EXPECT_EQ(c.image_token_id, 120120);
  EXPECT_EQ(c.image_newline_id, 120121);
  const auto v = load_vision_config(c, "synth");
  EXPECT_EQ(v.d_model, 1152);
  EXPECT_EQ(v.d_ff, 4304);
  EXPECT_EQ(v.n_layers, 27);
  EXPECT_EQ(v.n_heads, 16);
  EXPECT_EQ(v.head_dim(), 72);
  EXPECT_EQ(v.pos_edge(), 128);
  EXPECT_EQ(v.out_d, 1024);
  EXPECT_EQ(n_image_tokens(62, 88, 2), 31 * 45 + 2);  // 992x1408 -> 1397 (SPEC 3.8.3)
  EXPECT_EQ(n_image_tokens(32, 32, 2), 274);          // 512x512
}

TEST(OcrConfig, NestedTextConfigWithMropeSection) {
  json j = synth_ocr();
  json t;
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                        "num_key_value_heads", "head_dim", "rms_norm_eps", "tie_word_embeddings"}) {
    t[k] = j[k];
    j.erase(k);
  }
  t["rope_parameters"] = {
      {"rope_type", "dynamic"}, {"rope_theta", 10000.0}, {"alpha", 1000.0}, {"mrope_section", {16, 16, 16, 16}}};
  j.erase("rope_scaling");
  j["text_config"] = t;
  const auto c = parse_model_config(j, "nested");
  EXPECT_EQ(c.family, ModelFamily::kOcr);
  EXPECT_EQ(c.d_model, 1024);
  EXPECT_EQ(c.xdrope_section, (std::vector<int64_t>{16, 16, 16, 16}));
  EXPECT_EQ(c.rope_base(), 11158840.0f);
}

TEST(OcrConfig, Errors) {
  json j = synth_ocr();
  j.erase("vision_config");
  EXPECT_THROW(parse_model_config(j, "x"), InvalidInput);
  j = synth_ocr();
  j["rope_scaling"]["xdrope_section"] = {16, 16, 16};
  EXPECT_THROW(parse_model_config(j, "x"), InvalidInput);
  j = synth_ocr();
  j["image_token_id"] = 200000;
  EXPECT_THROW(parse_model_config(j, "x"), InvalidInput);
  j = synth_ocr();
  j["vision_config"]["hidden_act"] = "silu";
  const auto c = parse_model_config(j, "x");
  EXPECT_THROW(load_vision_config(c, "x"), Unsupported);
}

TEST(OcrConfig, Fp8IgnoreEntriesPerSaveName) {
  // SPEC 5.5: compressed-tensors gets the regex for vLLM's fused vision names; the native fp8 config (exact
  // names only) gets the fused qkv names of both vLLM revisions instead.
  const std::string model = std::string(ANGELSLIM_TEST_DATA) + "/fixtures/hy-ocr-tiny";
  auto yaml = [&](const std::string& extra) {
    return "model:\n  name: HunyuanVL\n  model_path: " + model +
           "\ncompression:\n  name: PTQ\n  quantization:\n    name: fp8_dynamic\n    quant_method:\n"
           "      weight: per-tensor\n      activation: per-tensor\n" +
           extra;
  };
  const TensorStore store(model);
  const auto cfg = load_model_config(model);
  auto ign = ocr_fp8_ignore(parse_run_config(yaml(""), "a.yaml"), cfg, store);
  EXPECT_EQ(ign.size(), 1u + 12u + 1u);
  EXPECT_NE(std::find(ign.begin(), ign.end(), "re:visual\\..*"), ign.end());
  EXPECT_NE(std::find(ign.begin(), ign.end(), "vit.layers.1.mlp.dense_4h_to_h"), ign.end());
  ign = ocr_fp8_ignore(parse_run_config(yaml("    save_name: fp8\n"), "a.yaml"), cfg, store);
  EXPECT_EQ(ign.size(), 1u + 12u + 4u);
  EXPECT_EQ(std::find(ign.begin(), ign.end(), "re:visual\\..*"), ign.end());
  EXPECT_NE(std::find(ign.begin(), ign.end(), "vit.layers.0.self_attn.qkv"), ign.end());
  EXPECT_NE(std::find(ign.begin(), ign.end(), "vit.layers.1.attn.qkv"), ign.end());
  ign = ocr_fp8_ignore(parse_run_config(yaml("    quant_vit: true\n"), "a.yaml"), cfg, store);
  EXPECT_EQ(ign, (std::vector<std::string>{"vit.perceive.mlp", "re:visual\\.perceive\\..*"}));
}

}  // namespace
}  // namespace angelslim
