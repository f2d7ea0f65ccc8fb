// ignore_layers matching against the worked cases of SPEC 2.7 (lm_head, mlp.gate.wg, mlp.gate vs
// mlp.gate_proj, self_attn.q_proj, layers.0, re: entries) and the fused-module / routed-expert checks.
#include "angelslim/quant/ignore_match.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "angelslim/core/error.h"

namespace angelslim {
namespace {

TEST(IgnoreMatches, Spec27Cases) {
  // lm_head matches the head (exact) and nothing that merely starts with it.
  EXPECT_TRUE(ignore_matches("lm_head", "lm_head"));
  EXPECT_FALSE(ignore_matches("lm_head", "lm_head_extra"));
  // mlp.gate.wg and mlp.gate match every router.
  EXPECT_TRUE(ignore_matches("mlp.gate.wg", "model.layers.3.mlp.gate.wg"));
  EXPECT_TRUE(ignore_matches("mlp.gate", "model.layers.3.mlp.gate.wg"));
  // ... but mlp.gate does NOT match mlp.gate_proj [AS-Q10].
  EXPECT_FALSE(ignore_matches("mlp.gate", "model.layers.3.mlp.gate_proj"));
  EXPECT_FALSE(ignore_matches("mlp.gate", "model.layers.3.mlp.shared_mlp.gate_proj"));
  // self_attn.q_proj matches every q_proj and no other projection.
  EXPECT_TRUE(ignore_matches("self_attn.q_proj", "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(ignore_matches("self_attn.q_proj", "model.layers.31.self_attn.q_proj"));
  EXPECT_FALSE(ignore_matches("self_attn.q_proj", "model.layers.0.self_attn.k_proj"));
  // layers.0 matches all of layer 0 and not layer 10.
  EXPECT_TRUE(ignore_matches("layers.0", "model.layers.0.mlp.down_proj"));
  EXPECT_TRUE(ignore_matches("layers.0", "model.layers.0.self_attn.o_proj"));
  EXPECT_FALSE(ignore_matches("layers.0", "model.layers.10.mlp.down_proj"));
  EXPECT_FALSE(ignore_matches("layers.1", "model.layers.10.mlp.down_proj"));
  // Component boundaries: a partial component never matches.
  EXPECT_TRUE(ignore_matches("q_proj", "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(ignore_matches("proj", "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(ignore_matches("odel.layers.0", "model.layers.0.mlp.up_proj"));
  EXPECT_TRUE(ignore_matches("model.layers.0.mlp.up_proj", "model.layers.0.mlp.up_proj"));
  EXPECT_FALSE(ignore_matches("model.layers.0.mlp.up_proj", "xmodel.layers.0.mlp.up_proj"));
  // A second occurrence is found when the first is not on a boundary.
  EXPECT_TRUE(ignore_matches("a.b", "xa.b.a.b.c"));
  // Empty entries match nothing.
  EXPECT_FALSE(ignore_matches("", "lm_head"));
}

TEST(IgnoreMatches, RegexEntriesAreFullMatches) {
  EXPECT_TRUE(ignore_matches(R"(re:.*\.q_proj)", "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(ignore_matches("re:q_proj", "model.layers.0.self_attn.q_proj"));  // not a search
  EXPECT_FALSE(ignore_matches("re:model", "model.layers.0.self_attn.q_proj"));   // not a prefix match
  EXPECT_TRUE(ignore_matches(R"(re:model\.layers\.[0-3]\..*)", "model.layers.3.mlp.up_proj"));
  EXPECT_FALSE(ignore_matches(R"(re:model\.layers\.[0-3]\..*)", "model.layers.30.mlp.up_proj"));
  EXPECT_TRUE(ignore_matches(R"(re:visual\..*)", "visual.layers.0.attn.qkv"));
  // End anchoring backtracks into the second alternative (fullmatch semantics, not "first then $").
  EXPECT_TRUE(ignore_matches("re:a|ab", "ab"));
  // A regex entry is not also taken literally.
  EXPECT_FALSE(ignore_matches("re:lm_head", "re:lm_head.x"));
  EXPECT_TRUE(ignore_matches("re:lm_head", "lm_head"));
}

TEST(IgnoreMatches, InvalidEntries) {
  EXPECT_TRUE(ignore_entry_error("re:(").has_value());
  EXPECT_TRUE(ignore_entry_error("").has_value());
  EXPECT_TRUE(ignore_entry_error("re:").has_value());
  EXPECT_FALSE(ignore_entry_error("re:.*").has_value());
  EXPECT_FALSE(ignore_entry_error("lm_head").has_value());
  EXPECT_THROW(ignore_matches("re:(", "lm_head"), InvalidInput);
  EXPECT_THROW(IgnoreMatcher(std::vector<std::string>{"lm_head", "re:[a-"}), InvalidInput);
}

TEST(IgnoreMatcher, AgreesWithIgnoreMatches) {
  const std::vector<std::string> entries = {"lm_head", "mlp.gate", "layers.1", R"(re:.*\.experts\.[0-9]+\.up_proj)",
                                            "self_attn.q_proj"};
  const std::vector<std::string> names = {"lm_head",
                                          "model.layers.0.mlp.gate.wg",
                                          "model.layers.0.mlp.gate_proj",
                                          "model.layers.1.mlp.down_proj",
                                          "model.layers.10.self_attn.k_proj",
                                          "model.layers.2.mlp.experts.7.up_proj",
                                          "model.layers.2.self_attn.q_proj",
                                          "model.layers.2.mlp.experts.7.down_proj"};
  IgnoreMatcher m(entries);
  for (const std::string& n : names) {
    int first = -1;
    for (size_t i = 0; i < entries.size(); ++i) {
      EXPECT_EQ(m.entry_matches(i, n), ignore_matches(entries[i], n)) << entries[i] << " / " << n;
      if (first < 0 && ignore_matches(entries[i], n)) first = static_cast<int>(i);
    }
    EXPECT_EQ(m.first_match(n), first) << n;
    EXPECT_EQ(m.matches(n), first >= 0) << n;
  }
  // Hand-checked expectations for the table above.
  EXPECT_EQ(m.first_match("lm_head"), 0);
  EXPECT_EQ(m.first_match("model.layers.0.mlp.gate.wg"), 1);
  EXPECT_EQ(m.first_match("model.layers.0.mlp.gate_proj"), -1);
  EXPECT_EQ(m.first_match("model.layers.1.mlp.down_proj"), 2);
  EXPECT_EQ(m.first_match("model.layers.10.self_attn.k_proj"), -1);
  EXPECT_EQ(m.first_match("model.layers.2.mlp.experts.7.up_proj"), 3);
  EXPECT_EQ(m.first_match("model.layers.2.self_attn.q_proj"), 4);
  EXPECT_EQ(m.first_match("model.layers.2.mlp.experts.7.down_proj"), -1);
}

// Linear modules of a 2-layer MoE with 2 routed experts (SPEC 1.5 names).
std::vector<std::string> moe_linears() {
  std::vector<std::string> v = {"lm_head"};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* s : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate.wg",
                          "mlp.shared_mlp.gate_proj", "mlp.shared_mlp.up_proj", "mlp.shared_mlp.down_proj"})
      v.push_back(p + s);
    for (int e = 0; e < 2; ++e)
      for (const char* s : {"gate_proj", "up_proj", "down_proj"})
        v.push_back(p + "mlp.experts." + std::to_string(e) + "." + s);
  }
  return v;
}

std::vector<std::string> dense_linears() {
  std::vector<std::string> v = {"lm_head"};
  for (int l = 0; l < 2; ++l)
    for (const char* s : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
      v.push_back("model.layers." + std::to_string(l) + "." + s);
  return v;
}

TEST(CheckIgnoreLayers, AcceptedLists) {
  IgnoreCheck c = check_ignore_layers({"lm_head", "mlp.gate.wg"}, moe_linears());
  EXPECT_TRUE(c.errors.empty());
  EXPECT_TRUE(c.warnings.empty());
  // Whole attention blocks are fine (all of q/k/v covered).
  c = check_ignore_layers({"self_attn", R"(re:.*\.self_attn\.[qkv]_proj)"}, moe_linears());
  EXPECT_TRUE(c.errors.empty());
  EXPECT_TRUE(c.warnings.empty());
  // The shipped GPTQ list on a dense model: mlp.gate.wg matches nothing -> a warning only.
  c = check_ignore_layers({"lm_head", "mlp.gate.wg"}, dense_linears());
  EXPECT_TRUE(c.errors.empty());
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("ignore_layers[1] 'mlp.gate.wg'"), std::string::npos) << c.warnings[0];
  // Embeddings are no Linear: a warning.
  c = check_ignore_layers({"model.embed_tokens"}, dense_linears());
  EXPECT_TRUE(c.errors.empty());
  EXPECT_EQ(c.warnings.size(), 1u);
}

TEST(CheckIgnoreLayers, PartialFusedGroupsAreErrors) {
  IgnoreCheck c = check_ignore_layers({"self_attn.q_proj"}, moe_linears());
  ASSERT_EQ(c.errors.size(), 2u);  // one per layer
  EXPECT_NE(c.errors[0].find("model.layers.0.self_attn: ignore_layers covers q_proj but not k_proj, v_proj"),
            std::string::npos)
      << c.errors[0];
  EXPECT_NE(c.errors[1].find("model.layers.1.self_attn"), std::string::npos) << c.errors[1];
  c = check_ignore_layers({"shared_mlp.gate_proj"}, moe_linears());
  ASSERT_EQ(c.errors.size(), 2u);
  EXPECT_NE(c.errors[0].find("covers gate_proj but not up_proj"), std::string::npos) << c.errors[0];
  c = check_ignore_layers({"model.layers.1.mlp.up_proj"}, dense_linears());
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_NE(c.errors[0].find("model.layers.1.mlp: ignore_layers covers up_proj but not gate_proj"), std::string::npos)
      << c.errors[0];
  c = check_ignore_layers({R"(re:model\.layers\.0\.self_attn\.[qk]_proj)"}, moe_linears());
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_NE(c.errors[0].find("covers q_proj, k_proj but not v_proj"), std::string::npos) << c.errors[0];
}

TEST(CheckIgnoreLayers, RoutedExpertsAreErrors) {
  IgnoreCheck c = check_ignore_layers({"layers.0"}, moe_linears());
  ASSERT_EQ(c.errors.size(), 1u);  // one per entry; layer 0 has 2 experts x 3 linears
  EXPECT_NE(c.errors[0].find("matches 6 routed expert linear(s), e.g. model.layers.0.mlp.experts.0.gate_proj"),
            std::string::npos)
      << c.errors[0];
  c = check_ignore_layers({"lm_head", "mlp.experts.1.down_proj"}, moe_linears());
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_NE(c.errors[0].find("ignore_layers[1]"), std::string::npos) << c.errors[0];
  EXPECT_NE(c.errors[0].find("matches 2 routed expert"), std::string::npos) << c.errors[0];
  EXPECT_TRUE(c.warnings.empty());
}

}  // namespace
}  // namespace angelslim
