// config.json parsing: the fixtures, RoPE normalisation (SPEC 1.4, 3.3) and errors that name the field.
#include <gtest/gtest.h>

#include "angelslim/core/error.h"
#include "angelslim/model/model_config.h"

namespace angelslim {
namespace {

using nlohmann::json;
const std::string kData = ANGELSLIM_TEST_DATA;

json dense() { return json::parse(R"({"architectures":["HunYuanDenseV1ForCausalLM"],"model_type":"hunyuan_v1_dense",
  "vocab_size":100,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
  "num_key_value_heads":2,"head_dim":128,"rope_theta":10000.0,"rope_scaling":{"alpha":1000.0,"type":"dynamic"}})"); }

template <class E>
void expect_error(const json& j, const std::string& needle) {
  try {
    parse_model_config(j, "cfg.json");
    FAIL() << needle;
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, Fixtures) {
  const auto d = load_model_config(kData + "/fixtures/hy-dense-tiny");
  EXPECT_EQ(d.family, ModelFamily::kDense);
  EXPECT_EQ(d.head_dim, 64);
  EXPECT_EQ(d.rope_base(), 12496091.0f);  // SPEC 3.3: D=64 base rounds to 12496091 in f32
  const auto m = load_model_config(kData + "/fixtures/hy-moe-tiny");
  EXPECT_EQ(m.family, ModelFamily::kMoE);
  EXPECT_EQ(m.n_experts, 8);
  EXPECT_EQ(m.moe_topk, (std::vector<int64_t>{2, 2, 2, 2}));
  EXPECT_EQ(m.shared_d_ff(0), 256);
}

TEST(ModelConfig, RopeBaseD128) {
  const auto c = parse_model_config(dense(), "cfg.json");
  EXPECT_EQ(c.rope_base(), 11158840.0f);  // SPEC 3.3
  // rope_parameters (transformers >= 5) take precedence and carry their own theta.
  auto j = dense();
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 10000.0}, {"alpha", 1000.0}};
  EXPECT_EQ(parse_model_config(j, "cfg.json").rope_base(), 11158840.0f);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
  const auto d = parse_model_config(j, "cfg.json");
  EXPECT_EQ(d.rope_kind, "default");
  EXPECT_EQ(d.rope_theta, 500000.0);
}

TEST(ModelConfig, PerLayerListsAndScalars) {
  auto j = dense();
  j["architectures"] = {"HunYuanMoEV1ForCausalLM"};
  j["num_experts"] = 4;
  j["moe_topk"] = 2;
  j["moe_intermediate_size"] = {32, 48};
  j["num_shared_expert"] = {1, 2};
  const auto c = parse_model_config(j, "cfg.json");
  EXPECT_EQ(c.moe_topk, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(c.moe_d_ff, (std::vector<int64_t>{32, 48}));
  EXPECT_EQ(c.shared_d_ff(1), 256);
  j["moe_intermediate_size"] = {32};
  expect_error<InvalidInput>(j, "moe_intermediate_size");
  j["moe_intermediate_size"] = 32;
  j["moe_topk"] = 9;
  expect_error<InvalidInput>(j, "moe_topk");
  // Legacy model_type "hunyuan" (GitHub A13B copy): MoE when num_experts > 1, dense otherwise.
  j["moe_topk"] = 2;
  j.erase("architectures");
  j["model_type"] = "hunyuan";
  EXPECT_EQ(parse_model_config(j, "cfg.json").family, ModelFamily::kMoE);
  j["num_experts"] = 1;
  EXPECT_EQ(parse_model_config(j, "cfg.json").family, ModelFamily::kDense);
}

TEST(ModelConfig, Errors) {
  auto j = dense();
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  expect_error<Unsupported>(j, "llama");
  j = dense();
  j.erase("hidden_size");
  expect_error<InvalidInput>(j, "hidden_size");
  j = dense();
  j["num_key_value_heads"] = 3;
  expect_error<InvalidInput>(j, "num_key_value_heads");
  j = dense();
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  expect_error<Unsupported>(j, "alpha");
  j = dense();
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  expect_error<Unsupported>(j, "yarn");
  j = dense();
  j["use_cla"] = true;
  expect_error<Unsupported>(j, "use_cla");
  j = dense();
  j["hidden_act"] = "gelu";
  expect_error<Unsupported>(j, "hidden_act");
  j = dense();
  j["vocab_size"] = "big";
  expect_error<InvalidInput>(j, "vocab_size");
  EXPECT_THROW(load_model_config("/nonexistent-dir"), InvalidInput);
}

}  // namespace
}  // namespace angelslim
