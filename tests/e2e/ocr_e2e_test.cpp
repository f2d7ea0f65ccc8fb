// HunyuanOCR end to end on hy-ocr-tiny with the multimodal calibration data (tests/data/calib/multimodal):
// fp8_static, int4_gptq and int4_awq (the configs/hunyuan_ocr settings) with quant_vit false, and fp8_static with
// quant_vit true. Checks: vision tower and adapter tensors byte-identical to the input (quant_vit false), the
// vision entries of each format's config (SPEC 5.3.1, 5.4, 5.5), and on image+text prompts the relative L2 error of
// the final logits against the bf16 checkpoint below plain round-to-nearest's at the same bit width (RTN: every
// LLM linear replaced by its AWQ-asym g128 dequantization, SPEC 4.2; the vision tower untouched).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "angelslim/quant/rtn_reference.h"
#include "angelslim/data/multimodal_dataset.h"
#include "angelslim/eval/generate_ocr.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan_vl.h"
#include "angelslim/model/vision.h"
#include "angelslim/quant/grid.h"
#include "angelslim/text/chat_template.h"
#include "angelslim/text/tokenizer.h"
#include "e2e_util.h"

namespace angelslim {
namespace {

using nlohmann::json;
using test::TmpDir;
namespace fs = std::filesystem;

const std::string kModel = test::kData + "/fixtures/hy-ocr-tiny";
const std::string kMm = test::kData + "/calib/multimodal/";

fs::path write_ocr_config(const fs::path& dir, const std::string& stem, const std::string& quant) {
  const auto p = dir / (stem + ".yaml");
  std::ofstream f(p);
  f << "global:\n  save_path: " << (dir / "out").string() << "\n"
    << "model:\n  name: HunyuanVL\n  model_path: " << kModel << "\n"
    << "compression:\n  name: PTQ\n  quantization:\n"
    << quant << "dataset:\n  name: MultiModalDataset\n  data_path: " << kMm << "fake_data.json\n"
    << "  max_seq_length: 512\n  num_samples: " << (test::kCheckQuality ? 5 : 2) << "\n";
  return p;
}

// Logits of all positions of a few image+text prompts (fp32 reference forward), concatenated.
std::vector<float> prompt_logits(const fs::path& dir) {
  const HunyuanOcrModel model(dir);
  const auto tok = Tokenizer::load(kModel);
  const auto tmpl = ChatTemplate::load(kModel);
  std::vector<float> all;
  const std::vector<std::pair<std::string, std::string>> prompts = {
      {"What is the difference in value between Lamb and Corn?", "1.png"},
      {"How many boats can you count in the harbor?", "boats.jpg"}};
  for (const auto& [q, img] : prompts) {
    const auto s = make_ocr_prompt(q, kMm + img, *tok, tmpl, model.config(), model.processor());
    OcrSequence seq{s.ids, s.xd_pos, s.image_begin, {}};
    for (const auto& im : s.images) seq.grids.push_back({im.grid_h, im.grid_w});
    const auto lg = model.logits(seq, s.images);
    all.insert(all.end(), lg.begin(), lg.end());
  }
  return all;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

const std::vector<float>& bf16_logits() {
  static const std::vector<float> v = prompt_logits(kModel);
  return v;
}

// The RTN checkpoint at `bits`: LLM linears replaced by their AWQ-asym g128 dequantization (stored F32).
double rtn_error(int bits) {
  TmpDir d("ocr-rtn");
  write_rtn_checkpoint(kModel, d.path(), GridSpec{GridKind::kAwqAsym, bits, 128, ScaleDType::kF16},
                       {"preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"});
  return rel_err(prompt_logits(d.path()), bf16_logits());
}

// Every vision/adapter tensor of the source, byte-identical in the output (except `replaced`).
void expect_vision_identical(const fs::path& out, const std::set<std::string>& replaced = {}) {
  TensorStore src(kModel), dst(out);
  int64_t n = 0;
  for (const auto& [name, t] : src.all()) {
    if (!is_vision_tensor(name, "vit.") || replaced.count(name)) continue;
    ASSERT_TRUE(dst.has(name)) << name;
    const auto& o = dst.get(name);
    EXPECT_EQ(o.dtype, t->dtype) << name;
    EXPECT_EQ(o.shape, t->shape) << name;
    EXPECT_TRUE(o.nbytes == t->nbytes && std::memcmp(o.data, t->data, t->nbytes) == 0) << name << " differs";
    ++n;
  }
  // hy-ocr-tiny: 3 embedding, 2 x 16 block and 12 adapter tensors.
  EXPECT_EQ(n + int64_t(replaced.size()), 47);
}

struct OcrRun {
  TmpDir dir{"ocr"};
  fs::path out;
  OcrRun(const std::string& stem, const std::string& quant) {
    RunOptions ro;
    ro.config_path = write_ocr_config(dir.path(), stem, quant);
    EXPECT_EQ(run_pipeline(ro), 0);
    out = dir.path() / "out" / stem;
  }
  json config() const { return json::parse(read_file(out / "config.json")); }
  json report() const { return json::parse(read_file(out / "quant_report.json")); }
};

std::vector<std::string> vit_linears(bool with_perceive) {
  std::vector<std::string> v;
  for (int l = 0; l < 2; ++l)
    for (auto k : {VisionLinearKind::kQ, VisionLinearKind::kK, VisionLinearKind::kV, VisionLinearKind::kO,
                   VisionLinearKind::kFc1, VisionLinearKind::kFc2})
      v.push_back(vision_linear_name("vit.", l, k));
  if (with_perceive) v.push_back("vit.perceive.mlp");
  return v;
}

void check_calibration_report(const OcrRun& r) {
  const auto rep = r.report();
  const auto& c = rep["calibration"];
  EXPECT_EQ(c["with_image"], test::kCheckQuality ? 5 : 2) << c.dump();
  EXPECT_GT(c["image_tokens_total"].get<int64_t>(), 0);
}

const char* kFp8 =
    "    name: fp8_static\n    bits: 8\n    quant_method:\n      weight: per-tensor\n      activation: per-tensor\n      weight_rounding: gptq\n"
    "    quant_vit: false\n    ignore_layers:\n      - lm_head\n";

// FP8 has 3 mantissa bits: its round-to-nearest at 8 bits is FP8 itself, weights rounded to e4m3 and activations
// scaled per forward (fp8_dynamic, no calibration). fp8_static as configs/hunyuan_ocr ships it (weight_rounding:
// gptq, SPEC 4.3.5) must be below that: the calibration images buy both the static input scales and the GPTQ
// rounding of the weights (measured 4.04e-2 vs 5.95e-2; with round-to-nearest weights fp8_static measured
// 6.12e-2, a tie within the +-2% that the static scale's mantissa alone moves it). INT8 g128 weight-only RTN, a
// finer grid with unquantized activations, is printed for reference only: no W8A8 FP8 format reaches it.
TEST(OcrE2E, Fp8StaticVisionUntouchedAndBelowFp8Rtn) {
  OcrRun r("ocr_fp8", kFp8);
  expect_vision_identical(r.out);
  check_calibration_report(r);
  const auto qc = r.config()["quantization_config"];
  std::vector<std::string> want = vit_linears(true);
  want.push_back("lm_head");
  want.push_back("re:visual\\..*");
  std::sort(want.begin(), want.end());
  EXPECT_EQ(qc["ignore"].get<std::vector<std::string>>(), want);
  TensorStore st(r.out);
  EXPECT_EQ(st.get("model.layers.0.self_attn.q_proj.weight").dtype, DType::kF8E4M3);
  EXPECT_TRUE(st.has("model.layers.1.mlp.down_proj.input_scale"));
  const double e = rel_err(prompt_logits(r.out), bf16_logits());
  OcrRun dyn("ocr_fp8_dyn",
             "    name: fp8_dynamic\n    bits: 8\n    quant_method:\n      weight: per-tensor\n"
             "      activation: per-tensor\n    ignore_layers:\n      - lm_head\n");
  expect_vision_identical(dyn.out);
  const double e_dyn = rel_err(prompt_logits(dyn.out), bf16_logits());
  const double rtn = rtn_error(8);
  std::printf("ocr fp8_static: logits rel err %.4e; FP8 RTN (fp8_dynamic) %.4e; INT8 g128 weight-only RTN %.4e\n", e,
              e_dyn, rtn);
  EXPECT_TRUE(std::isfinite(e));
  if (test::kCheckQuality) {
    EXPECT_LT(e, 0.9 * e_dyn);
  }
}

TEST(OcrE2E, Fp8StaticQuantVit) {
  OcrRun r("ocr_fp8_vit", std::string(kFp8).replace(std::string(kFp8).find("quant_vit: false"), 16, "quant_vit: true"));
  std::set<std::string> replaced;
  for (const auto& m : vit_linears(false)) replaced.insert(m + ".weight");
  expect_vision_identical(r.out, replaced);  // norms, biases, convs, tables, perceive.* untouched
  const auto qc = r.config()["quantization_config"];
  EXPECT_EQ(qc["ignore"].get<std::vector<std::string>>(),
            (std::vector<std::string>{"lm_head", "re:visual\\.perceive\\..*", "vit.perceive.mlp"}));
  TensorStore st(r.out);
  for (int l = 0; l < 2; ++l) {
    const std::string p = "vit.layers." + std::to_string(l) + ".";
    for (const char* n : {"self_attn.q_proj", "self_attn.o_proj", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"}) {
      EXPECT_EQ(st.get(p + n + ".weight").dtype, DType::kF8E4M3) << n;
      EXPECT_GT(st.get(p + n + ".input_scale").to_f32().at(0), 0.0f) << n;
    }
    // q/k/v share one weight scale (vLLM fuses them, SPEC 4.3.3).
    const float sq = st.get(p + "self_attn.q_proj.weight_scale").to_f32()[0];
    EXPECT_EQ(st.get(p + "self_attn.k_proj.weight_scale").to_f32()[0], sq);
    EXPECT_EQ(st.get(p + "self_attn.v_proj.weight_scale").to_f32()[0], sq);
  }
  EXPECT_EQ(st.get("vit.perceive.mlp.weight").dtype, DType::kBF16);
  const double e = rel_err(prompt_logits(r.out), bf16_logits());
  std::printf("ocr fp8_static + quant_vit: logits rel err %.4e\n", e);
  EXPECT_TRUE(std::isfinite(e));
  // Measured 7.8e-2 against 6.1e-2 with the ViT in BF16: FP8 on the 12 ViT linears adds a bounded error.
  if (test::kCheckQuality) {
    EXPECT_LT(e, 0.12);
  }
}

TEST(OcrE2E, Int4GptqVisionUntouchedAndBeatsRtn4) {
  OcrRun r("ocr_gptq",
           "    name: int4_gptq\n    bits: 4\n    quant_method:\n      weight: per-group\n"
           "      group_size: 128\n    ignore_layers:\n      - lm_head\n");
  expect_vision_identical(r.out);
  check_calibration_report(r);
  const auto qc = r.config()["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "gptq");
  EXPECT_EQ(qc["dynamic"], json::parse(R"({"-:.*(vit|visual|vision_tower)\\..*": {}})"));
  TensorStore st(r.out);
  EXPECT_TRUE(st.has("model.layers.0.self_attn.q_proj.qweight"));
  EXPECT_FALSE(st.has("vit.layers.0.self_attn.q_proj.qweight"));
  const double e = rel_err(prompt_logits(r.out), bf16_logits());
  const double rtn = rtn_error(4);
  std::printf("ocr int4_gptq: logits rel err %.4e, RTN w4 g128 %.4e\n", e, rtn);
  EXPECT_TRUE(std::isfinite(e));
  if (test::kCheckQuality) {
    EXPECT_LT(e, rtn);
  }
}

TEST(OcrE2E, Int4AwqVisionUntouchedAndBeatsRtn4) {
  OcrRun r("ocr_awq",
           "    name: int4_awq\n    bits: 4\n    quant_method:\n      weight: per-group\n"
           "      group_size: 128\n      zero_point: true\n      mse_range: false\n"
           "    ignore_layers:\n      - lm_head\n");
  expect_vision_identical(r.out);
  check_calibration_report(r);
  const auto qc = r.config()["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "awq");
  const auto ntc = qc["modules_to_not_convert"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(ntc.begin(), ntc.end(), "visual"), ntc.end());
  EXPECT_NE(std::find(ntc.begin(), ntc.end(), "vit"), ntc.end());
  const double e = rel_err(prompt_logits(r.out), bf16_logits());
  const double rtn = rtn_error(4);
  std::printf("ocr int4_awq: logits rel err %.4e, RTN w4 g128 %.4e\n", e, rtn);
  EXPECT_TRUE(std::isfinite(e));
  if (test::kCheckQuality) {
    EXPECT_LT(e, rtn);
  }
}

TEST(OcrE2E, Int4GptqAsymAwqLayoutKeepsVision) {
  // GPTQ with zero points is written in the AWQ layout (SPEC 5.3.4): the vision tower goes to
  // modules_to_not_convert (SPEC 5.4).
  OcrRun r("ocr_gptq_asym",
           "    name: int4_gptq\n    bits: 4\n    quant_method:\n      weight: per-group\n"
           "      group_size: 128\n      zero_point: true\n");
  expect_vision_identical(r.out);
  const auto qc = r.config()["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "awq");
  EXPECT_EQ(qc["modules_to_not_convert"], json::parse(R"(["visual", "vit"])"));
}

// `generate --image`: the KV-cache path (image prefill with XD-RoPE, then one token at a time at the sequence
// index) picks the same greedy tokens as full forwards over the growing sequence.
TEST(OcrE2E, GenerateWithImageMatchesFullForward) {
  const auto gen = generate_ocr(kModel, "How many boats?", kMm + "boats.jpg", 4, nullptr);
  ASSERT_FALSE(gen.empty());
  const HunyuanOcrModel model(kModel);
  const auto tok = Tokenizer::load(kModel);
  const auto tmpl = ChatTemplate::load(kModel);
  const auto s = make_ocr_prompt("How many boats?", kMm + "boats.jpg", *tok, tmpl, model.config(), model.processor());
  std::vector<std::array<int64_t, 2>> grids{{s.images[0].grid_h, s.images[0].grid_w}};
  std::vector<int32_t> ids = s.ids;
  const int64_t V = model.config().vocab_size;
  for (int32_t want : gen) {
    OcrSequence seq{ids, ocr_positions(model.config(), ids, grids, 2), s.image_begin, grids};
    const auto lg = model.logits(seq, s.images);
    const float* last = lg.data() + (int64_t(ids.size()) - 1) * V;
    EXPECT_EQ(int32_t(std::max_element(last, last + V) - last), want);
    ids.push_back(want);
  }
}

}  // namespace
}  // namespace angelslim
