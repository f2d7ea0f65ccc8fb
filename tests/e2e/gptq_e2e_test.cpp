// GPTQ end to end on the fixtures: packing/config per SPEC 5.3 read back from disk, an independent
// dequantization of the stored tensors (written here from the SPEC formulas, not the loader's), perplexity
// against bf16 and against round-to-nearest, starving MoE experts, act-order modes and 8-bit.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>

#include "angelslim/calib/engine.h"
#include "angelslim/config/run_config.h"
#include "angelslim/data/text_dataset.h"
#include "angelslim/quant/gptq_quantizer.h"
#include "angelslim/quant/rtn_reference.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/text/chat_template.h"
#include "angelslim/text/tokenizer.h"
#include "angelslim/model/weight_loader.h"
#include "angelslim/quant/grid.h"
#include "e2e_util.h"
#include "unit/host_backed_matrix.h"

namespace angelslim {
namespace {

using nlohmann::json;
using test::TmpDir;
namespace fs = std::filesystem;

std::string gptq_yaml(int bits, int group, bool actorder, bool desc_act = false, bool zero_point = false) {
  std::string s = "    name: int4_gptq\n    bits: " + std::to_string(bits) +
                  "\n    quant_method:\n      weight: " + (group < 0 ? "per-channel" : "per-group") +
                  "\n      group_size: " + std::to_string(group < 0 ? 128 : group) +
                  "\n      actorder: " + (actorder ? "true" : "false") + "\n";
  if (desc_act) s += "      desc_act: true\n";
  if (zero_point) s += "      zero_point: true\n";
  return s;
}

std::vector<int32_t> i32(const TensorView& t) {
  std::vector<int32_t> v(static_cast<std::size_t>(t.numel()));
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

// SPEC 5.3.2 dequantization, written out independently: W[n, k] = (q[k, n] - Z) * S[g_idx[k], n].
std::vector<float> dequant_gptq(const TensorStore& st, const std::string& m, int bits, int64_t n_out, int64_t n_in) {
  const auto qw = i32(st.get(m + ".qweight"));
  const auto qz = i32(st.get(m + ".qzeros"));
  const auto sc = st.get(m + ".scales").to_f32();
  const auto gi = i32(st.get(m + ".g_idx"));
  const int P = 32 / bits;
  const uint32_t mask = (1u << bits) - 1;
  std::vector<float> w(static_cast<std::size_t>(n_out * n_in));
  for (int64_t k = 0; k < n_in; ++k)
    for (int64_t n = 0; n < n_out; ++n) {
      const uint32_t word = static_cast<uint32_t>(qw[(k / P) * n_out + n]);
      const int q = static_cast<int>((word >> (bits * (k % P))) & mask);
      const int g = gi[k];
      const uint32_t zw = static_cast<uint32_t>(qz[g * (n_out / P) + n / P]);
      const int z = static_cast<int>((zw >> (bits * (n % P))) & mask) + 1;
      w[n * n_in + k] = static_cast<float>(q - z) * sc[g * n_out + n];
    }
  return w;
}

// Held-out perplexity of plain RTN on the GPTQ-sym grid (BF16 scales) at the same bits and group size: every decoder
// linear replaced by its dequantization (stored F32, so the loader reads the exact values); everything else copied.
double rtn_sym_ppl(const std::string& fixture, int windows, int bits = 4, int group = 128) {
  TmpDir d("gptq-rtn");
  const fs::path src = test::kData + "/fixtures/" + fixture;
  write_rtn_checkpoint(src, d.path(), GridSpec{GridKind::kGptqSym, bits, group, ScaleDType::kBF16});
  return test::heldout_ppl(d.path(), windows);
}

struct GptqRun {
  TmpDir dir{"gptq"};
  fs::path out;
  explicit GptqRun(const std::string& fixture, const std::string& name, const std::string& quant, int samples = 32) {
    const auto cfg = test::write_config(dir.path(), "run", fixture, name, quant, samples, 512);
    RunOptions ro;
    ro.config_path = cfg;
    EXPECT_EQ(run_pipeline(ro), 0);
    out = dir.path() / "out" / "run";
  }
};

TEST(GptqE2E, DenseW4G128LayoutAndIndependentDequant) {
  GptqRun r("hy-dense-tiny", "HunyuanDense", gptq_yaml(4, 128, true), 16);
  const auto c = json::parse(read_file(r.out / "config.json"));
  const json want = json::parse(R"({"bits": 4, "group_size": 128, "desc_act": false, "sym": true,
    "static_groups": true, "true_sequential": true, "damp_percent": 0.01, "lm_head": false,
    "quant_method": "gptq", "checkpoint_format": "gptq"})");
  EXPECT_EQ(c["quantization_config"]["quant_method"], want["quant_method"]);
  for (const auto& [k, v] : want.items()) {
    if (k == "damp_percent") EXPECT_NEAR(c["quantization_config"][k].get<double>(), 0.01, 1e-7);
    else EXPECT_EQ(c["quantization_config"][k], v) << k;
  }
  TensorStore st(r.out);
  TensorStore src(test::kData + "/fixtures/hy-dense-tiny");
  // Shapes per SPEC 5.3.2 (K = in, N = out).
  const std::string m = "model.layers.2.mlp.down_proj";
  EXPECT_EQ(st.get(m + ".qweight").shape, (std::vector<int64_t>{1024 / 8, 384}));
  EXPECT_EQ(st.get(m + ".qzeros").shape, (std::vector<int64_t>{1024 / 128, 384 / 8}));
  EXPECT_EQ(st.get(m + ".scales").shape, (std::vector<int64_t>{1024 / 128, 384}));
  EXPECT_EQ(st.get(m + ".scales").dtype, DType::kBF16);
  EXPECT_EQ(st.get(m + ".g_idx").shape, (std::vector<int64_t>{1024}));
  EXPECT_FALSE(st.has(m + ".weight"));
  for (int32_t z : i32(st.get(m + ".qzeros"))) EXPECT_EQ(z, 0x77777777);  // symmetric int4: zero 8 stored as 7
  // g_idx trivial in the default modes (static groups; fold for down_proj).
  const auto gi = i32(st.get(m + ".g_idx"));
  for (int k = 0; k < 1024; ++k) ASSERT_EQ(gi[k], k / 128);
  // The fold permutation leaves the MLP function unchanged: SwiGLU(gate, up) -> down computed from the
  // dequantized stored tensors must be close to the source MLP (4-bit error only).
  const std::string p = "model.layers.2.mlp.";
  const auto g = dequant_gptq(st, p + "gate_proj", 4, 1024, 384);
  const auto u = dequant_gptq(st, p + "up_proj", 4, 1024, 384);
  const auto d = dequant_gptq(st, p + "down_proj", 4, 384, 1024);
  const auto gs = src.get(p + "gate_proj.weight").to_f32();
  const auto us = src.get(p + "up_proj.weight").to_f32();
  const auto ds = src.get(p + "down_proj.weight").to_f32();
  std::vector<float> x(384);
  for (int i = 0; i < 384; ++i) x[i] = std::sin(0.37f * i) + 0.1f;
  auto mlp = [&](const std::vector<float>& G, const std::vector<float>& U, const std::vector<float>& D) {
    std::vector<float> a(1024), y(384, 0.0f);
    for (int j = 0; j < 1024; ++j) {
      float gg = 0, uu = 0;
      for (int i = 0; i < 384; ++i) {
        gg += G[j * 384 + i] * x[i];
        uu += U[j * 384 + i] * x[i];
      }
      a[j] = gg / (1 + std::exp(-gg)) * uu;
    }
    for (int o = 0; o < 384; ++o)
      for (int j = 0; j < 1024; ++j) y[o] += D[o * 1024 + j] * a[j];
    return y;
  };
  auto rel = [](const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (std::size_t o = 0; o < a.size(); ++o) {
      num += (a[o] - b[o]) * double(a[o] - b[o]);
      den += b[o] * double(b[o]);
    }
    return std::sqrt(num / den);
  };
  const auto ys = mlp(gs, us, ds);
  const double err = rel(mlp(g, u, d), ys);
  // Control: the same stored down_proj with its input channels rotated by one (a lost permutation).
  std::vector<float> d_bad(d.size());
  for (int o = 0; o < 384; ++o)
    for (int j = 0; j < 1024; ++j) d_bad[o * 1024 + j] = d[o * 1024 + (j + 1) % 1024];
  const double err_bad = rel(mlp(g, u, d_bad), ys);
  std::printf("layer 2 MLP relative output error from stored tensors: %.4f (misaligned control %.4f)\n", err,
              err_bad);
  // 4-bit error on an off-distribution input is ~0.25; a misaligned permutation decorrelates the output (~1.4).
  EXPECT_LT(err, 0.5);
  EXPECT_GT(err_bad, 0.9);
  if (!test::kCheckQuality) return;
  // SPEC 6.2 protocol, first 8 windows (fp32 forward): bf16 98.174, RTN w4 g128 sym 99.047 (+0.89%), the reference
  // toolkit's GPTQ 98.267 (+0.095%); RTN on our GPTQ-sym grid (computed here) 98.735 (+0.57%). This run calibrates
  // on 16 samples only (measured 98.382, +0.21%; 128 samples: +0.077%): it must recover at least half of RTN's
  // loss and stay within +0.3% of bf16.
  const double base = test::heldout_ppl(test::kData + "/fixtures/hy-dense-tiny", 8);
  const double rtn = rtn_sym_ppl("hy-dense-tiny", 8);
  const double q = test::heldout_ppl(r.out, 8);
  std::printf("hy-dense-tiny gptq w4 g128: ppl %.4f -> %.4f (%+.3f%%), rtn sym %.4f (%+.3f%%)\n", base, q,
              (q / base - 1) * 100, rtn, (rtn / base - 1) * 100);
  EXPECT_LT(q / base - 1, 0.003);
  EXPECT_LT(q - base, 0.5 * (rtn - base));  // recovers at least half of RTN's loss
}

TEST(GptqE2E, MoeExpertsAllQuantizedNonZero) {
  GptqRun r("hy-moe-tiny", "HunyuanMoE", gptq_yaml(4, 128, true));
  TensorStore st(r.out);
  for (int l = 0; l < 4; ++l)
    for (int e = 0; e < 8; ++e)
      for (const char* n : {"gate_proj", "up_proj", "down_proj"}) {
        const std::string m = "model.layers." + std::to_string(l) + ".mlp.experts." + std::to_string(e) + "." + n;
        const auto qw = i32(st.get(m + ".qweight"));
        bool nonzero = false;
        for (int32_t v : qw) nonzero |= v != static_cast<int32_t>(0x88888888);  // all codes 8 = all-zero weight
        EXPECT_TRUE(nonzero) << m;
      }
  const auto rep = json::parse(read_file(r.out / "quant_report.json"));
  ASSERT_TRUE(rep["layers"][0].contains("expert_tokens"));
  if (!test::kCheckQuality) return;
  const double base = test::heldout_ppl(test::kData + "/fixtures/hy-moe-tiny", 2);
  const double q = test::heldout_ppl(r.out, 2);
  std::printf("hy-moe-tiny gptq w4 g128: ppl %.4f -> %.4f (%+.3f%%)\n", base, q, (q / base - 1) * 100);
  EXPECT_LT(q / base - 1, 0.05);
}

// The report of a GPTQ run on hy-moe-tiny (8 samples, w4 g128, act order) with `var`=`value` in the environment.
json moe_report_with(const char* var, const char* value) {
  ::setenv(var, value, 1);
  GptqRun r("hy-moe-tiny", "HunyuanMoE", gptq_yaml(4, 128, true), 8);
  ::unsetenv(var);
  return json::parse(read_file(r.out / "quant_report.json"));
}

// Solving several linears of a stage at once (ANGELSLIM_GPTQ_CONCURRENCY) commits them in the serial order: the
// output shards are bitwise those of the one-at-a-time run (MoE: 8 experts per stage, act order with the fold).
TEST(GptqE2E, ConcurrentSolvesGiveIdenticalOutputs) {
  const json a = moe_report_with("ANGELSLIM_GPTQ_CONCURRENCY", "1");
  const json b = moe_report_with("ANGELSLIM_GPTQ_CONCURRENCY", "3");
  ASSERT_FALSE(a["outputs"].empty());
  EXPECT_EQ(a["outputs"], b["outputs"]) << "sha256 of the shards";
  ASSERT_EQ(a["layers"].size(), b["layers"].size());
  for (std::size_t l = 0; l < a["layers"].size(); ++l) {
    EXPECT_EQ(a["layers"][l]["solves_at_once"], 1);
    EXPECT_EQ(b["layers"][l]["solves_at_once"], 3);
    const auto& la = a["layers"][l]["linears"];
    const auto& lb = b["layers"][l]["linears"];
    ASSERT_EQ(la.size(), lb.size());
    for (std::size_t i = 0; i < la.size(); ++i) {
      EXPECT_EQ(la[i]["name"], lb[i]["name"]) << "report order, layer " << l;
      EXPECT_EQ(la[i]["loss"], lb[i]["loss"]) << la[i]["name"];
    }
  }
}

// The layer writes on a second thread (ANGELSLIM_DEFER_WRITES=1; the default on --device cuda) give the same shards
// as the writes in line; the report gives the write times where they happened.
TEST(GptqE2E, DeferredWritesGiveIdenticalOutputs) {
  const json a = moe_report_with("ANGELSLIM_DEFER_WRITES", "0");
  const json b = moe_report_with("ANGELSLIM_DEFER_WRITES", "1");
  ASSERT_FALSE(a["outputs"].empty());
  EXPECT_EQ(a["outputs"], b["outputs"]) << "sha256 of the shards";
  EXPECT_EQ(a["resume"]["enabled"], true);
  EXPECT_EQ(b["resume"]["enabled"], false) << "deferred writes leave the resume checkpoints off";
  EXPECT_FALSE(a["timing_s"].contains("last_layer_write"));
  EXPECT_TRUE(b["timing_s"].contains("last_layer_write"));
  ASSERT_EQ(a["layers"].size(), b["layers"].size());
  for (std::size_t l = 0; l < b["layers"].size(); ++l) {
    EXPECT_TRUE(a["layers"][l]["write_s"].is_number()) << l;
    EXPECT_TRUE(b["layers"][l]["write_s"].is_number()) << l;
    EXPECT_TRUE(b["layers"][l]["write_wait_s"].is_number()) << l;
    EXPECT_FALSE(a["layers"][l].contains("write_wait_s")) << l;
  }
}

// The quantizer's device route (GptqQuantizer::set_solver(..., device_solver = true)) on the CPU backend, which
// takes no weights from a device: each commit falls back to the W_hat's host copy, so two layers quantized through
// a solver that leaves W_hat "on the device" end with the weights, activations and report of the plain CPU solver.
TEST(GptqE2E, DeviceWeightsFallBackToTheirHostCopy) {
  TmpDir d("gptq-device-route");
  const auto cfg_path = test::write_config(d.path(), "run", "hy-dense-tiny", "HunyuanDense", gptq_yaml(4, 128, true));
  const RunConfig rc = load_run_config(cfg_path);
  const fs::path dir = test::kData + "/fixtures/hy-dense-tiny";
  const ModelConfig cfg = load_model_config(dir);
  TensorStore store(dir);
  const auto tok = Tokenizer::load(dir);
  const auto tmpl = ChatTemplate::load(dir);
  std::vector<std::vector<int32_t>> ids;
  for (const auto& s : load_text_dataset(test::kData + "/calib/sharegpt_gpt4_256.jsonl", *tok, tmpl, 128, 4, false, 0))
    ids.push_back(s.ids);
  ASSERT_FALSE(ids.empty());
  struct Out {
    std::vector<std::vector<float>> weights;
    std::vector<json> linears;
    std::vector<float> x;
  };
  std::atomic<int> downloads{0};
  auto run = [&](bool device_route) {
    CalibActivations acts(cfg, store, ids);
    GptqQuantizer q(rc, cfg);
    if (device_route)
      q.set_solver(
          [&downloads](std::span<const float> w, int rows, int cols, const Hessian& h, const GptqOptions& o) {
            EXPECT_TRUE(o.w_hat_on_device);
            GptqResult r = gptq_quantize(w, rows, cols, h.host(), o);
            r.out_err = 0.5;  // a device solver reports its own; the CPU one leaves it to the quantizer
            r.w_hat_device = std::make_shared<test::HostBackedMatrix>(rows, cols, std::move(r.w_hat), &downloads);
            r.w_hat.clear();
            return r;
          },
          "device-stand-in", 1, true);
    Out out;
    for (int64_t l = 0; l < 2; ++l) {
      DecoderLayer layer = load_decoder_layer(store, cfg, l);
      json rep = {{"linears", json::array()}, {"warnings", json::array()}};
      q.quantize_layer_with(layer, &acts, rep);
      for (const auto& [id, lin] : layer_linears(layer)) out.weights.push_back(lin->w);
      for (const auto& lin : rep["linears"]) out.linears.push_back(lin);
    }
    out.x = acts.x();
    return out;
  };
  const Out host = run(false);
  const Out device = run(true);
  EXPECT_EQ(downloads.load(), 14) << "one fallback download per linear (2 layers x 7)";
  EXPECT_EQ(host.weights, device.weights);
  EXPECT_EQ(host.x, device.x);
  ASSERT_EQ(host.linears.size(), device.linears.size());
  for (std::size_t i = 0; i < host.linears.size(); ++i) {
    const json& a = host.linears[i];
    const json& b = device.linears[i];
    EXPECT_EQ(a["name"], b["name"]);
    EXPECT_EQ(a["loss"], b["loss"]) << a["name"];
    EXPECT_EQ(b["out_err"], 0.5) << "the solver's own value is reported";
    EXPECT_EQ(b["solver"], "device-stand-in");
    // ||W_hat - W||: the quantizer's row sums on one route, the solver's own on the other.
    EXPECT_NEAR(a["err_fro"].get<double>(), b["err_fro"].get<double>(), 1e-9 * a["err_fro"].get<double>())
        << a["name"];
    EXPECT_NEAR(a["err_rel"].get<double>(), b["err_rel"].get<double>(), 1e-9 * a["err_rel"].get<double>())
        << a["name"];
  }
}

TEST(GptqE2E, EightBitAndDescActLoadBack) {
  for (const auto& [bits, desc] : {std::pair{8, false}, std::pair{4, true}}) {
    GptqRun r("hy-dense-tiny", "HunyuanDense", gptq_yaml(bits, 64, true, desc), 8);
    const auto c = json::parse(read_file(r.out / "config.json"));
    EXPECT_EQ(c["quantization_config"]["bits"], bits);
    EXPECT_EQ(c["quantization_config"]["desc_act"], desc);
    TensorStore st(r.out);
    if (bits == 8) {
      for (int32_t z : i32(st.get("model.layers.0.self_attn.q_proj.qzeros"))) EXPECT_EQ(z, 0x7F7F7F7F);
    }
    // The independent dequantizer and the tool's loader agree exactly.
    const auto cfg = load_model_config(r.out);
    const auto wf = WeightFormat::from_config(cfg);
    for (const char* m : {"model.layers.1.self_attn.k_proj", "model.layers.4.mlp.down_proj"}) {
      const auto& sc = st.get(std::string(m) + ".scales");
      const int64_t n_out = sc.shape[1], n_in = st.get(std::string(m) + ".g_idx").shape[0];
      const auto mine = dequant_gptq(st, m, bits, n_out, n_in);
      const auto lin = load_linear(st, wf, m, n_out, n_in);
      EXPECT_EQ(mine, lin.w) << m;
    }
    if (!test::kCheckQuality) continue;
    const double base = test::heldout_ppl(test::kData + "/fixtures/hy-dense-tiny", 2);
    const double q = test::heldout_ppl(r.out, 2);
    std::printf("gptq w%d g64 desc_act=%d: ppl %.4f -> %.4f\n", bits, desc, base, q);
    EXPECT_LT(q / base - 1, bits == 8 ? 0.005 : 0.03);
  }
}

}  // namespace
}  // namespace angelslim
