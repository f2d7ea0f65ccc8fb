// `--device cuda` against `--device cpu` (issue 6): the whole pipeline on both fixtures for fp8_static, fp8_dynamic
// and GPTQ (4/8 bits, every act-order mode), tensor by tensor, plus perplexity; the GPU statistics of one layer
// against the CPU ones; spilled activations against resident ones. Skips without a device.
// Why outputs differ at all: both backends run the same algorithm code on the same weights, but the GPU sums in
// another order (cuBLAS tensor-core GEMMs vs OpenBLAS), and in the bf16 forward mode a one-fp32-ulp difference at a
// BF16 storage point moves a value by one bf16 ulp (~1e-3 relative L2 per layer, tests/gpu/cuda_layer_test.cpp).
// GPTQ then amplifies any input difference: each column's rounding error feeds the later columns of its row, so one
// flipped near-tie changes the rest of the row, and later layers quantize on slightly different Hessians. The two
// outputs are then different but equally good quantizations; so the checks are (first GPU run, 4 windows: codes
// differed 13-23% in natural/desc_act order, perplexity by -0.03..+0.53%, with both signs):
//   FP8: weights and weight scales bitwise equal (fp8_static: quantized on the GPU, cuda_fp8_test.cpp; fp8_dynamic:
//        on the host); input scales within 2 bf16 ulps of the activation abs-max; perplexity within 0.1% (32
//        held-out windows).
//   GPTQ: where the inputs are identical (layer 0 q/k/v) codes equal except rounding near-ties (<= 1e-3 of them);
//         the GPU-vs-CPU-solver test (cuda_gptq_test.cpp) shows the solvers agree exactly on one Hessian; per run
//         perplexity within 0.5% and the mean per-linear relative output error within 2%; the mean perplexity change
//         over the four act-order/bit modes within 0.1% (equal-quality differences have no preferred sign).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "angelslim/backend/cuda_calib.h"
#include "angelslim/calib/engine.h"
#include "angelslim/data/text_dataset.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/weight_loader.h"
#include "angelslim/quant/gptq.h"
#include "angelslim/text/chat_template.h"
#include "angelslim/text/tokenizer.h"
#include "e2e/e2e_util.h"
#include "gpu/gpu_test_util.h"

namespace angelslim {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct RunOut {
  fs::path out;
  json report;
};

RunOut run_once(const test::TmpDir& dir, const std::string& stem, const std::string& fixture, const std::string& name,
                const std::string& quant, const std::string& device, std::optional<int64_t> budget = std::nullopt,
                int64_t batch_tokens = 32768) {
  const auto cfg = test::write_config(dir.path(), stem, fixture, name, quant, 32, 512);
  RunOptions ro;
  ro.config_path = cfg;
  ro.device = device;
  ro.cuda_activation_budget_bytes = budget;
  ro.cuda_batch_tokens = batch_tokens;
  EXPECT_EQ(run_pipeline(ro), 0);
  RunOut r;
  r.out = dir.path() / "out" / stem;
  r.report = json::parse(read_file(r.out / "quant_report.json"));
  return r;
}

std::string fp8_yaml(bool dynamic) {
  return std::string("    name: ") + (dynamic ? "fp8_dynamic" : "fp8_static") +
         "\n    bits: 8\n    quant_method:\n      weight: per-tensor\n      activation: per-tensor\n";
}

std::string gptq_yaml(int bits, bool actorder, bool desc_act) {
  return "    name: int4_gptq\n    bits: " + std::to_string(bits) +
         "\n    quant_method:\n      weight: per-group\n      group_size: 128\n      actorder: " +
         (actorder ? "true" : "false") + "\n" + (desc_act ? "      desc_act: true\n" : "");
}

std::vector<uint8_t> bytes_of(const TensorView& t) { return std::vector<uint8_t>(t.data, t.data + t.nbytes); }

// Differences between two outputs of the same run, tensor by tensor.
struct Diff {
  int64_t codes = 0, codes_diff = 0, max_code_delta = 0;  // GPTQ codes (unpacked qweight)
  int64_t l0_qkv_codes = 0, l0_qkv_diff = 0;              // the same, layer 0 q/k/v only
  int64_t scales = 0, scales_diff = 0;                    // GPTQ scales
  int64_t g_idx_diff = 0;
  int64_t fp8 = 0, fp8_diff = 0;  // FP8 weight bytes
  int64_t weight_scale_diff = 0;
  double input_scale_max_ulps = 0.0;  // in bf16 ulps of the abs-max
  int64_t other_diff = 0;             // other tensors (norms, embeddings): must be bitwise equal
  std::vector<std::string> other_names;
};

Diff compare_outputs(const fs::path& cpu, const fs::path& gpu, int bits) {
  TensorStore a(cpu), b(gpu);
  Diff d;
  EXPECT_EQ(a.all().size(), b.all().size());
  for (const auto& [name, ta] : a.all()) {
    if (!b.has(name)) {
      ADD_FAILURE() << "GPU output lacks " << name;
      continue;
    }
    const TensorView& tb = b.get(name);
    EXPECT_EQ(ta->dtype, tb.dtype) << name;
    EXPECT_EQ(ta->shape, tb.shape) << name;
    if (ta->nbytes != tb.nbytes) continue;
    auto ends = [&](const char* s) {
      const std::string suf(s);
      return name.size() > suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
    };
    if (ends(".qweight")) {
      const int per = 32 / bits;
      const uint32_t mask = (1u << bits) - 1;
      const bool l0qkv = name.rfind("model.layers.0.self_attn.", 0) == 0 && name.find("o_proj") == std::string::npos;
      const auto* wa = reinterpret_cast<const uint32_t*>(ta->data);
      const auto* wb = reinterpret_cast<const uint32_t*>(tb.data);
      for (std::size_t i = 0; i < ta->nbytes / 4; ++i)
        for (int j = 0; j < per; ++j) {
          const int ca = static_cast<int>((wa[i] >> (bits * j)) & mask),
                    cb = static_cast<int>((wb[i] >> (bits * j)) & mask);
          ++d.codes;
          d.l0_qkv_codes += l0qkv;
          if (ca != cb) {
            ++d.codes_diff;
            d.l0_qkv_diff += l0qkv;
            d.max_code_delta = std::max<int64_t>(d.max_code_delta, std::abs(ca - cb));
          }
        }
    } else if (ends(".scales")) {
      const auto va = ta->to_f32(), vb = tb.to_f32();
      d.scales += static_cast<int64_t>(va.size());
      for (std::size_t i = 0; i < va.size(); ++i) d.scales_diff += va[i] != vb[i];
    } else if (ends(".g_idx")) {
      d.g_idx_diff += bytes_of(*ta) != bytes_of(tb);
    } else if (ta->dtype == DType::kF8E4M3) {
      d.fp8 += static_cast<int64_t>(ta->nbytes);
      for (std::size_t i = 0; i < ta->nbytes; ++i) d.fp8_diff += ta->data[i] != tb.data[i];
    } else if (ends(".weight_scale")) {
      d.weight_scale_diff += bytes_of(*ta) != bytes_of(tb);
    } else if (ends(".input_scale")) {
      const float sa = ta->to_f32()[0], sb = tb.to_f32()[0];
      const double amax = static_cast<double>(sa) * 448.0;
      d.input_scale_max_ulps = std::max(
          d.input_scale_max_ulps, std::fabs(double(sa) - sb) * 448.0 / gputest::bf16_ulp(static_cast<float>(amax)));
    } else if (ends(".qzeros")) {
      d.other_diff += bytes_of(*ta) != bytes_of(tb);
      if (bytes_of(*ta) != bytes_of(tb)) d.other_names.push_back(name);
    } else if (bytes_of(*ta) != bytes_of(tb)) {
      ++d.other_diff;
      d.other_names.push_back(name);
    }
  }
  return d;
}

// Mean over the report's GPTQ linears of out_err (relative output error on the run's own calibration inputs).
double mean_out_err(const json& report) {
  double sum = 0.0;
  int64_t n = 0;
  for (const auto& l : report["layers"])
    for (const auto& lin : l["linears"])
      if (lin.value("method", "") == "gptq" && lin["out_err"].is_number()) {
        sum += lin["out_err"].get<double>();
        ++n;
      }
  return n ? sum / static_cast<double>(n) : 0.0;
}

struct PairResult {
  double ppl_rel = 0.0;      // ppl_gpu / ppl_cpu - 1
  double out_err_rel = 0.0;  // mean out_err gpu / cpu - 1 (GPTQ)
};

PairResult check_pair(const std::string& fixture, const std::string& model_name, const std::string& label,
                      const std::string& quant, int bits, bool fp8) {
  test::TmpDir dir("gpu-e2e");
  const RunOut c = run_once(dir, "cpu", fixture, model_name, quant, "cpu");
  const RunOut g = run_once(dir, "gpu", fixture, model_name, quant, "cuda");
  EXPECT_EQ(g.report["device"], "cuda");
  const Diff d = compare_outputs(c.out, g.out, bits);
  // 32 windows of 512 held-out tokens: the perplexity difference of two equally good quantizations shrinks with
  // the evaluation length (with 2-4 windows it reached 0.5% for GPTQ on the MoE fixture).
  constexpr int kWindows = 32;
  const double pc = test::heldout_ppl(c.out, kWindows), pg = test::heldout_ppl(g.out, kWindows);
  PairResult r;
  r.ppl_rel = pg / pc - 1.0;
  const double oc = mean_out_err(c.report), og = mean_out_err(g.report);
  r.out_err_rel = oc > 0 ? og / oc - 1.0 : 0.0;
  std::printf(
      "[gpu-e2e] %-12s %-18s ppl cpu %.5f gpu %.5f (%+.4f%%) | out_err cpu %.6f gpu %.6f (%+.3f%%) | codes "
      "%lld/%lld differ (%.3f%%, max |d| %lld), l0 qkv %lld/%lld, scales %lld/%lld, g_idx tensors %lld | fp8 "
      "bytes %lld/%lld, weight_scale %lld, input_scale max %.2f ulps | other %lld\n",
      fixture.c_str(), label.c_str(), pc, pg, r.ppl_rel * 100, oc, og, r.out_err_rel * 100,
      static_cast<long long>(d.codes_diff), static_cast<long long>(d.codes),
      d.codes ? 100.0 * d.codes_diff / d.codes : 0.0, static_cast<long long>(d.max_code_delta),
      static_cast<long long>(d.l0_qkv_diff), static_cast<long long>(d.l0_qkv_codes),
      static_cast<long long>(d.scales_diff), static_cast<long long>(d.scales), static_cast<long long>(d.g_idx_diff),
      static_cast<long long>(d.fp8_diff), static_cast<long long>(d.fp8), static_cast<long long>(d.weight_scale_diff),
      d.input_scale_max_ulps, static_cast<long long>(d.other_diff));
  EXPECT_EQ(d.other_diff, 0) << label << ": first " << (d.other_names.empty() ? "" : d.other_names[0]);
  if (fp8) {
    EXPECT_LE(std::fabs(r.ppl_rel), 1e-3) << label << ": perplexity of the GPU output vs the CPU output";
    EXPECT_EQ(d.fp8_diff, 0) << label;
    EXPECT_EQ(d.weight_scale_diff, 0) << label;
    EXPECT_LE(d.input_scale_max_ulps, 2.0) << label;
    // fp8_static: the weights were quantized on the GPU (cuda_fp8.cpp), not by the host fallback.
    const char* off = std::getenv("ANGELSLIM_CUDA_FP8_WEIGHTS");
    if (label == "fp8_static" && !cuda::cuda_legacy() && !(off && std::string(off) == "0")) {
      for (const auto& l : g.report["layers"]) {
        EXPECT_EQ(l.value("weights_device", std::string()), "cuda") << label << ": layer " << l.value("index", -1);
      }
    }
  } else {
    EXPECT_GT(d.codes, 0);
    // Identical inputs (layer 0, first stage): codes equal except rounding near-ties.
    EXPECT_LE(static_cast<double>(d.l0_qkv_diff), 1e-3 * static_cast<double>(d.l0_qkv_codes)) << label;
    // Later layers: a different but equally good quantization (see the file comment).
    EXPECT_LE(std::fabs(r.ppl_rel), 5e-3) << label;
    EXPECT_LE(std::fabs(r.out_err_rel), 0.02) << label << ": mean relative output error of the linears";
  }
  return r;
}

TEST(CudaPipeline, Fp8MatchesCpu) {
  ANGELSLIM_REQUIRE_GPU();
  for (const auto& [fx, name] : {std::pair{"hy-dense-tiny", "HunyuanDense"}, std::pair{"hy-moe-tiny", "HunyuanMoE"}}) {
    check_pair(fx, name, "fp8_static", fp8_yaml(false), 8, true);
    check_pair(fx, name, "fp8_dynamic", fp8_yaml(true), 8, true);
  }
}

TEST(CudaPipeline, GptqMatchesCpu) {
  ANGELSLIM_REQUIRE_GPU();
  struct Mode {
    const char* label;
    int bits;
    bool actorder, desc;
  };
  const Mode modes[] = {{"w4 natural", 4, false, false},
                        {"w4 actorder+fold", 4, true, false},
                        {"w4 desc_act", 4, true, true},
                        {"w8 actorder+fold", 8, true, false}};
  for (const auto& [fx, name] : {std::pair{"hy-dense-tiny", "HunyuanDense"}, std::pair{"hy-moe-tiny", "HunyuanMoE"}}) {
    double mean = 0.0;
    for (const auto& m : modes)
      mean += check_pair(fx, name, m.label, gptq_yaml(m.bits, m.actorder, m.desc), m.bits, false).ppl_rel;
    mean /= std::size(modes);
    std::printf("[gpu-e2e] %-12s GPTQ mean perplexity change over the modes %+.4f%%\n", fx, mean * 100);
    // Differences between equally good quantizations have no preferred sign; a GPU-side error would.
    EXPECT_LE(std::fabs(mean), 1e-3) << fx;
  }
}

// Spilling is a placement decision only: outputs bitwise equal to the resident run, whatever the batching.
TEST(CudaPipeline, SpilledActivationsGiveIdenticalOutputs) {
  ANGELSLIM_REQUIRE_GPU();
  test::TmpDir dir("gpu-spill");
  const std::string q = gptq_yaml(4, true, false);
  const RunOut resident = run_once(dir, "resident", "hy-dense-tiny", "HunyuanDense", q, "cuda", std::nullopt, 2048);
  const int64_t total = resident.report["backend"]["activations"]["bytes"].get<int64_t>();
  const RunOut half = run_once(dir, "half", "hy-dense-tiny", "HunyuanDense", q, "cuda", total / 2, 2048);
  const RunOut none = run_once(dir, "none", "hy-dense-tiny", "HunyuanDense", q, "cuda", int64_t{0}, 2048);
  EXPECT_EQ(resident.report["backend"]["activations"]["spilled_batches"], 0);
  const int64_t n_batches = resident.report["backend"]["activations"]["batches"].get<int64_t>();
  EXPECT_GT(n_batches, 2);
  const int64_t half_spilled = half.report["backend"]["activations"]["spilled_batches"].get<int64_t>();
  EXPECT_GT(half_spilled, 0);
  EXPECT_LT(half_spilled, n_batches);
  EXPECT_EQ(none.report["backend"]["activations"]["spilled_batches"], n_batches);
  EXPECT_GT(none.report["backend"]["activations"]["host_bytes"].get<int64_t>(), 0);
  EXPECT_GT(resident.report["peak_gpu_bytes"].get<int64_t>(), 0);
  for (const RunOut* r : {&half, &none})
    EXPECT_EQ(r->report["outputs"], resident.report["outputs"]) << "sha256 of the shards";
}

// The stage cache (cuda_calib.h: GPTQ's later passes start from kept intermediate results) is exact: outputs bitwise
// equal to runs that recompute every pass from the layer input (ANGELSLIM_CUDA_STAGE_CACHE=0), several batches.
TEST(CudaPipeline, StageCacheGivesIdenticalOutputs) {
  ANGELSLIM_REQUIRE_GPU();
  test::TmpDir dir("gpu-stage");
  for (const auto& [fx, name] : {std::pair{"hy-dense-tiny", "HunyuanDense"}, std::pair{"hy-moe-tiny", "HunyuanMoE"}})
    for (const bool actorder : {false, true}) {
      const std::string q = gptq_yaml(4, actorder, false);
      const std::string stem = std::string(fx) + (actorder ? "-act" : "-nat");
      ::setenv("ANGELSLIM_CUDA_STAGE_CACHE", "0", 1);
      const RunOut off = run_once(dir, stem + "-off", fx, name, q, "cuda", std::nullopt, 2048);
      ::unsetenv("ANGELSLIM_CUDA_STAGE_CACHE");
      const RunOut on = run_once(dir, stem + "-on", fx, name, q, "cuda", std::nullopt, 2048);
      EXPECT_EQ(off.report["backend"]["stage_cache"]["hits"], 0) << stem;
      EXPECT_FALSE(off.report["backend"]["stage_cache"]["enabled"].get<bool>()) << stem;
      // Per layer, three of the five passes start past the layer input: dense, the gate/up stage from the attention
      // output, the down stage from h, the propagation from h and the down_proj input; MoE, all three from the
      // attention output.
      const int64_t layers = on.report["model"]["layers"].get<int64_t>();
      EXPECT_EQ(on.report["backend"]["stage_cache"]["hits"].get<int64_t>(), 3 * layers) << stem;
      EXPECT_GT(on.report["backend"]["stage_cache"]["bytes"].get<int64_t>(), 0) << stem;
      EXPECT_EQ(on.report["outputs"], off.report["outputs"]) << stem << ": sha256 of the shards";
    }
}

// Solving several linears at once on the GPU (a pool of workspaces on their own streams; 4 by default) gives the
// outputs of one solve at a time on the backend's stream, bitwise, and reports the linears in the same order (GPTQ
// losses to the last bits: they are summed with device atomics).
TEST(CudaPipeline, ConcurrentSolvesGiveIdenticalOutputs) {
  ANGELSLIM_REQUIRE_GPU();
  test::TmpDir dir("gpu-concurrent");
  for (const auto& [fx, name] : {std::pair{"hy-dense-tiny", "HunyuanDense"}, std::pair{"hy-moe-tiny", "HunyuanMoE"}}) {
    const std::string q = gptq_yaml(4, true, false);
    ::setenv("ANGELSLIM_GPTQ_CONCURRENCY", "1", 1);
    const RunOut one = run_once(dir, std::string(fx) + "-1", fx, name, q, "cuda", std::nullopt, 2048);
    ::unsetenv("ANGELSLIM_GPTQ_CONCURRENCY");
    const RunOut many = run_once(dir, std::string(fx) + "-n", fx, name, q, "cuda", std::nullopt, 2048);
    ASSERT_FALSE(one.report["outputs"].empty()) << fx;
    EXPECT_EQ(one.report["outputs"], many.report["outputs"]) << fx << ": sha256 of the shards";
    for (std::size_t l = 0; l < one.report["layers"].size(); ++l) {
      EXPECT_EQ(one.report["layers"][l]["solves_at_once"], 1) << fx;
      EXPECT_EQ(many.report["layers"][l]["solves_at_once"], 4) << fx;
      const auto& a = one.report["layers"][l]["linears"];
      const auto& b = many.report["layers"][l]["linears"];
      ASSERT_EQ(a.size(), b.size()) << fx;
      for (std::size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i]["name"], b[i]["name"]) << fx << " layer " << l;
        // The loss is summed with device atomics (order-dependent in the last bits), the outputs are not. RTN
        // (starving experts) has none.
        ASSERT_EQ(a[i]["loss"].is_null(), b[i]["loss"].is_null()) << fx << " " << a[i]["name"];
        if (a[i]["loss"].is_null()) continue;
        const double la = a[i]["loss"].get<double>(), lb = b[i]["loss"].get<double>();
        EXPECT_NEAR(la, lb, 1e-12 * std::fabs(la)) << fx << " " << a[i]["name"];
      }
    }
  }
}

// The GPU solver reading the Hessians where the pass left them and handing W_hat to the backend on the device gives
// the same shards as the route through the host (the device forms H and W_hat with the host's FP32 products).
TEST(CudaPipeline, DeviceHandoffGivesIdenticalOutputs) {
  ANGELSLIM_REQUIRE_GPU();
  test::TmpDir dir("gpu-handoff");
  for (const auto& [fx, name] : {std::pair{"hy-dense-tiny", "HunyuanDense"}, std::pair{"hy-moe-tiny", "HunyuanMoE"}}) {
    const std::string q = gptq_yaml(4, true, false);
    ::setenv("ANGELSLIM_GPTQ_DEVICE_HANDOFF", "0", 1);
    const RunOut host = run_once(dir, std::string(fx) + "-h", fx, name, q, "cuda", std::nullopt, 2048);
    ::unsetenv("ANGELSLIM_GPTQ_DEVICE_HANDOFF");
    const RunOut device = run_once(dir, std::string(fx) + "-d", fx, name, q, "cuda", std::nullopt, 2048);
    ASSERT_FALSE(host.report["outputs"].empty()) << fx;
    EXPECT_EQ(host.report["outputs"], device.report["outputs"]) << fx << ": sha256 of the shards";
    const auto& wh = host.report["backend"]["weights"];
    const auto& wd = device.report["backend"]["weights"];
    EXPECT_EQ(wh["linear_updates_from_device"], 0) << fx;
    EXPECT_GT(wd["linear_updates_from_device"].get<int64_t>(), 0) << fx;
    EXPECT_EQ(wh["linear_updates"], wd["linear_updates"]) << fx;
    for (std::size_t l = 0; l < host.report["layers"].size(); ++l) {
      const auto& a = host.report["layers"][l]["linears"];
      const auto& b = device.report["layers"][l]["linears"];
      ASSERT_EQ(a.size(), b.size()) << fx;
      for (std::size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i]["method"], b[i]["method"]) << fx << " " << a[i]["name"];
        if (a[i]["err_fro"].is_null()) continue;
        // ||W_hat - W||: summed on the host in one route, with device atomics in the other.
        const double ea = a[i]["err_fro"].get<double>(), eb = b[i]["err_fro"].get<double>();
        EXPECT_NEAR(ea, eb, 1e-9 * ea) << fx << " " << a[i]["name"];
      }
    }
  }
}

// One layer's statistics from both backends on identical inputs (the real calibration samples of a fixture).
TEST(CudaPipeline, LayerStatisticsMatchCpu) {
  ANGELSLIM_REQUIRE_GPU();
  for (const std::string fx : {"hy-dense-tiny", "hy-moe-tiny"}) {
    const std::string dir = test::kData + "/fixtures/" + fx;
    const ModelConfig cfg = load_model_config(dir);
    TensorStore store(dir);
    const auto tok = Tokenizer::load(dir);
    const auto tmpl = ChatTemplate::load(dir);
    const auto samples =
        load_text_dataset(test::kData + "/calib/sharegpt_gpt4_256.jsonl", *tok, tmpl, 512, 16, false, 0, nullptr);
    std::vector<std::vector<int32_t>> ids;
    for (const auto& s : samples) ids.push_back(s.ids);
    CalibActivations cpu(cfg, store, ids);
    CudaCalibOptions co;
    co.batch_tokens = 1500;  // several ragged batches
    cuda::CudaCalibActivations gpu(cfg, store, ids, true, co);
    ASSERT_EQ(cpu.n_tokens(), gpu.n_tokens());
    EXPECT_EQ(gputest::compare(gpu.download_activations(), cpu.x()).n_diff, 0) << fx << ": embeddings";
    DecoderLayer layer = load_decoder_layer(store, cfg, 0);
    ForwardOptions opt{true};
    StatsSpec spec;
    spec.abs_max = true;
    spec.hessian = {LinearKind::kQ, LinearKind::kO, LinearKind::kGate, LinearKind::kDown};
    LayerStats sc = cpu.observe_stats(layer, opt, spec);
    LayerStats sg = gpu.observe_stats(layer, opt, spec);
    ASSERT_EQ(sc.abs_max.size(), sg.abs_max.size()) << fx;
    ASSERT_EQ(sc.gram.size(), sg.gram.size()) << fx;
    for (const auto& [key, a] : sc.abs_max) {
      const auto& b = sg.abs_max.at(key);
      EXPECT_EQ(a.tokens, b.tokens) << fx << " " << key;
      EXPECT_LE(std::fabs(a.amax - b.amax), 2 * gputest::bf16_ulp(a.amax)) << fx << " " << key;
    }
    for (auto& [key, a] : sc.gram) {
      const auto& b = sg.gram.at(key);
      EXPECT_EQ(a.tokens, b.tokens) << fx << " " << key;
      const auto e = gputest::compare(b.xtx, a.xtx);
      gputest::report(fx + " layer 0 gram " + key, e);
      // q: identical inputs (fp32 summation order only); later groups see bf16-rounded intermediates.
      EXPECT_LE(e.rel_l2, key == "self_attn.q_proj" ? 1e-5 : 1e-2) << fx << " " << key;
    }
    // Layer-0 q/k/v GPTQ from each backend's Hessian: codes equal except rounding near-ties.
    int64_t tc = 0, tg = 0;
    const auto hc = sc.take_hessian(LinearId{0, LinearKind::kQ}, &tc);
    const auto hg = sg.take_hessian(LinearId{0, LinearKind::kQ}, &tg);
    ASSERT_EQ(tc, tg);
    GptqOptions go;
    go.order = GptqOrder::kActOrderStatic;
    int64_t n = 0, diff = 0;
    for (const Linear* lin : {&layer.q, &layer.k, &layer.v}) {
      const auto rc = gptq_quantize(lin->w, static_cast<int>(lin->n_out), static_cast<int>(lin->n_in), hc, go);
      const auto rg = gptq_quantize(lin->w, static_cast<int>(lin->n_out), static_cast<int>(lin->n_in), hg, go);
      EXPECT_EQ(rc.perm, rg.perm) << fx << ": act-order permutation";
      for (std::size_t i = 0; i < rc.codes.size(); ++i) diff += rc.codes[i] != rg.codes[i];
      n += static_cast<int64_t>(rc.codes.size());
    }
    std::printf("[gpu-e2e] %s layer 0 q/k/v GPTQ codes from GPU vs CPU Hessians: %lld/%lld differ\n", fx.c_str(),
                static_cast<long long>(diff), static_cast<long long>(n));
    EXPECT_LE(static_cast<double>(diff), 1e-3 * static_cast<double>(n)) << fx;
    // Propagation: the advanced activations agree as the layer test's tolerance says (bf16 flips, ~1e-3).
    cpu.advance_stats(layer, opt, StatsSpec{});
    gpu.advance_stats(layer, opt, StatsSpec{});
    const auto e = gputest::compare(gpu.download_activations(), cpu.x());
    gputest::report(fx + " layer 0 advanced activations", e);
    EXPECT_LE(e.rel_l2, 1e-2) << fx;
  }
}

}  // namespace
}  // namespace angelslim
