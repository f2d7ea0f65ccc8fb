// AWQ on the GPU (issue 6) against the CPU: the fake-quantization kernel bitwise against awq_fake_quantize, the clip
// kernel against awq_clip_search, and `--device cuda` against `--device cpu` end to end on both fixtures (with and
// without the clip search). Layer 0 sees identical inputs on both backends: its chosen alphas must be identical.
// Later layers see inputs that differ by the bf16 storage-point flips of cuda_pipeline_test.cpp (and, with the clip
// search, by clip choices that flipped on near-ties of the err sums, which change the propagated weights; MoE routing
// then moves a few tokens between experts), so a group may pick a neighbouring alpha whose CPU loss is within
// kLaterRel of the CPU's minimum (first GPU run: 18/18 identical on hy-dense-tiny without clipping; with clipping or
// on hy-moe-tiny 3-5 groups per run differed, by at most +2.4% CPU loss; routed token counts by <= 0.1%). The
// outputs' perplexities must agree within 0.1%. Skips without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

#include "angelslim/quant/awq.h"
#include "angelslim/quant/awq_clip.h"
#include "backend/cuda/awq_kernels.h"
#include "e2e/e2e_util.h"
#include "gpu/gpu_test_util.h"

namespace angelslim {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr double kLaterRel = 0.05;

int kind_code(GridKind k) { return k == GridKind::kAwqAsym ? 0 : 1; }
int dtype_code(ScaleDType d) { return d == ScaleDType::kBF16 ? 0 : d == ScaleDType::kF16 ? 1 : 2; }

TEST(CudaAwq, FakeQuantizeMatchesCpuBitwise) {
  ANGELSLIM_REQUIRE_GPU();
  auto& ctx = gputest::ctx();
  const int rows = 96, cols = 512;
  auto w = gputest::random_vec(static_cast<std::size_t>(rows) * cols, 11, -0.08f, 0.08f);
  auto xm = gputest::random_vec(cols, 12, 0.0f, 3.0f);
  for (GridKind kind : {GridKind::kAwqAsym, GridKind::kAwqSym})
    for (int bits : {4, 8})
      for (ScaleDType dt : {ScaleDType::kF16, ScaleDType::kBF16})
        for (int gs : {128, -1})
          for (float alpha : {0.0f, 0.35f, 0.95f}) {
            GridSpec grid{kind, bits, gs, dt};
            const auto s = awq_scales(xm, alpha);
            const auto ref = awq_fake_quantize(w, rows, cols, s, grid);
            auto dw = cuda::to_device(ctx, w), ds = cuda::to_device(ctx, s);
            cuda::DeviceBuffer<float> out(w.size());
            cuda::DeviceBuffer<int> flag(1);
            ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(flag.data(), 0, sizeof(int), ctx.stream()));
            ANGELSLIM_CUDA_CHECK(cuda::kernels::awq_fake_quant(ctx.stream(), dw.data(), rows, cols, ds.data(),
                                                               resolve_group_size(gs, cols), kind_code(kind), bits,
                                                               dtype_code(dt), out.data(), flag.data()));
            const auto got = cuda::to_host(ctx, out.data(), out.size());
            const auto f = cuda::to_host(ctx, flag.data(), 1);
            EXPECT_EQ(f[0], 0);
            EXPECT_EQ(gputest::compare(got, ref).n_diff, 0)
                << "kind " << kind_code(kind) << " bits " << bits << " g " << gs << " alpha " << alpha;
          }
}

TEST(CudaAwq, ClipSearchMatchesCpu) {
  ANGELSLIM_REQUIRE_GPU();
  auto& ctx = gputest::ctx();
  const int rows = 64, cols = 384, n = 700;
  const auto w0 = gputest::random_vec(static_cast<std::size_t>(rows) * cols, 21, -0.1f, 0.1f);
  auto x = gputest::random_vec(static_cast<std::size_t>(n) * cols, 22, -2.0f, 2.0f);
  for (std::size_t i = 0; i < x.size(); i += 37) x[i] *= 8.0f;  // some outliers, so clipping pays off somewhere
  for (GridKind kind : {GridKind::kAwqAsym, GridKind::kAwqSym}) {
    GridSpec grid{kind, 4, 128, ScaleDType::kF16};
    std::vector<float> w_cpu = w0;
    const auto m_cpu = awq_clip_search(w_cpu, rows, cols, x, n, grid);
    // The device search: per-group Gram blocks from cuBLAS, then the kernel.
    const int g = 128, ng = cols / g;
    auto dx = cuda::to_device(ctx, x), dw = cuda::to_device(ctx, w0);
    cuda::DeviceBuffer<float> gram(static_cast<std::size_t>(ng) * g * g), m(static_cast<std::size_t>(rows) * ng);
    cuda::DeviceBuffer<int> flag(1);
    ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(flag.data(), 0, sizeof(int), ctx.stream()));
    const float alpha = 1.0f / static_cast<float>(n), beta = 0.0f;
    ANGELSLIM_CUBLAS_CHECK(cuda::cublas().sgemm_strided_batched(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, g, g, n, &alpha,
                                                                dx.data(), cols, g, dx.data(), cols, g, &beta,
                                                                gram.data(), g, static_cast<long long>(g) * g, ng));
    ANGELSLIM_CUDA_CHECK(cuda::kernels::awq_clip(ctx.stream(), dw.data(), rows, cols, g, gram.data(), kind_code(kind),
                                                 4, dtype_code(grid.scale_dtype), m.data(), flag.data()));
    const auto m_gpu = cuda::to_host(ctx, m.data(), m.size());
    const auto w_gpu = cuda::to_host(ctx, dw.data(), dw.size());
    int64_t diff = 0, clipped = 0;
    for (std::size_t i = 0; i < m_cpu.size(); ++i) {
      diff += m_cpu[i] != m_gpu[i];
      const int r = static_cast<int>(i) / ng, gi = static_cast<int>(i) % ng;
      float m0 = 0.0f;
      for (int j = 0; j < g; ++j) m0 = std::max(m0, std::fabs(w0[static_cast<std::size_t>(r) * cols + gi * g + j]));
      clipped += m_cpu[i] < m0;
    }
    // Same err formula in another summation order: a choice may differ only where two shrink factors nearly tie.
    std::printf("[gpu-awq] clip kind %d: m* differ in %lld of %zu (row, group) pairs; CPU clipped %lld\n",
                kind_code(kind), static_cast<long long>(diff), m_cpu.size(), static_cast<long long>(clipped));
    EXPECT_GT(clipped, 0);
    EXPECT_LE(static_cast<double>(diff), 0.02 * static_cast<double>(m_cpu.size()));
    // Where m* agrees, the clamped weights agree exactly.
    for (std::size_t i = 0; i < m_cpu.size(); ++i) {
      if (m_cpu[i] != m_gpu[i]) continue;
      const int r = static_cast<int>(i) / ng, gi = static_cast<int>(i) % ng;
      for (int j = 0; j < g; ++j) {
        const std::size_t k = static_cast<std::size_t>(r) * cols + gi * g + j;
        ASSERT_EQ(w_cpu[k], w_gpu[k]) << "row " << r << " group " << gi;
      }
    }
  }
}

struct AwqRun {
  fs::path out;
  json report;
};

AwqRun run_awq(const test::TmpDir& dir, const std::string& stem, const std::string& fixture, const std::string& name,
               bool mse_range, const std::string& device) {
  const std::string quant =
      std::string("    name: int4_awq\n    bits: 4\n    quant_method:\n      weight: per-group\n") +
      "      group_size: 128\n      zero_point: true\n      mse_range: " + (mse_range ? "true" : "false") + "\n";
  const auto cfg = test::write_config(dir.path(), stem, fixture, name, quant, 32, 512);
  RunOptions ro;
  ro.config_path = cfg;
  ro.device = device;
  EXPECT_EQ(run_pipeline(ro), 0);
  AwqRun r;
  r.out = dir.path() / "out" / stem;
  r.report = json::parse(read_file(r.out / "quant_report.json"));
  return r;
}

TEST(CudaAwq, PipelineMatchesCpu) {
  ANGELSLIM_REQUIRE_GPU();
  struct Pair {
    std::string label;
    std::unique_ptr<test::TmpDir> dir;
    AwqRun c, g;
  };
  std::vector<Pair> pairs;
  // First every run and the alpha comparison, then the perplexities.
  for (const auto& [fx, name] : {std::pair{"hy-dense-tiny", "HunyuanDense"}, std::pair{"hy-moe-tiny", "HunyuanMoE"}})
    for (bool mse : {false, true}) {
      Pair pr;
      pr.label = std::string(fx) + (mse ? " mse_range" : "");
      pr.dir = std::make_unique<test::TmpDir>("gpu-awq");
      const test::TmpDir& dir = *pr.dir;
      pr.c = run_awq(dir, "cpu", fx, name, mse, "cpu");
      pr.g = run_awq(dir, "gpu", fx, name, mse, "cuda");
      const AwqRun& c = pr.c;
      const AwqRun& g = pr.g;
      EXPECT_EQ(g.report["device"], "cuda");
      int64_t groups = 0, same = 0, ties = 0, other = 0, skipped_diff = 0, routed_diff = 0;
      double worst_tie = 0.0;
      ASSERT_EQ(c.report["layers"].size(), g.report["layers"].size());
      for (std::size_t l = 0; l < c.report["layers"].size(); ++l) {
        const json& gc = c.report["layers"][l]["awq_groups"];
        const json& gg = g.report["layers"][l]["awq_groups"];
        ASSERT_EQ(gc.size(), gg.size()) << fx << " layer " << l;
        for (std::size_t i = 0; i < gc.size(); ++i) {
          EXPECT_EQ(gc[i]["group"], gg[i]["group"]);
          // Layer 0 sees identical inputs on both backends. Later layers see inputs that differ by rounding, so an
          // MoE token whose router scores tie can go to another expert: an expert's token count (and with it its
          // skip decision and loss curve) may then differ, and only the perplexity bound below applies to it. The
          // flips compound over layers: 5 of 433 tokens (1.2%) on an H100 on 2026-12-06, so 3% or 4 tokens.
          if (gc[i].contains("skipped") || gg[i].contains("skipped")) {
            const bool differs = gc[i].contains("skipped") != gg[i].contains("skipped");
            (l == 0 ? skipped_diff : routed_diff) += differs;
            continue;
          }
          ++groups;
          const double tc = gc[i]["tokens"].get<double>(), tg = gg[i]["tokens"].get<double>();
          if (l == 0) {
            EXPECT_EQ(tc, tg) << fx << " layer 0 " << gc[i]["group"];
          }
          EXPECT_LE(std::fabs(tc - tg), std::max(0.03 * tc, 4.0)) << fx << " layer " << l << " " << gc[i]["group"];
          if (tc != tg) {
            ++routed_diff;
            continue;
          }
          const float ac = gc[i]["alpha"].get<float>(), ag = gg[i]["alpha"].get<float>();
          if (ac == ag) {
            ++same;
            continue;
          }
          const auto& loss = gc[i]["loss"];
          const double lmin = loss[static_cast<std::size_t>(std::lround(ac * kAwqAlphaSteps))].get<double>();
          const double lg = loss[static_cast<std::size_t>(std::lround(ag * kAwqAlphaSteps))].get<double>();
          const double rel = (lg - lmin) / lmin;
          worst_tie = std::max(worst_tie, rel);
          if (l > 0 && rel <= kLaterRel) {
            ++ties;
          } else {
            ++other;
            ADD_FAILURE() << fx << " layer " << l << " " << gc[i]["group"] << ": alpha cpu " << ac << " gpu " << ag
                          << ", CPU loss +" << rel * 100 << "%";
          }
        }
      }
      std::printf(
          "[gpu-awq] %-12s mse_range %d: alphas %lld/%lld identical, %lld neighbours in later layers (worst +%.4f%% "
          "CPU loss), %lld "
          "other, %lld with other tokens (MoE routing ties) | layer seconds cpu %.2f gpu %.2f\n",
          fx, mse, static_cast<long long>(same), static_cast<long long>(groups), static_cast<long long>(ties),
          worst_tie * 100, static_cast<long long>(other), static_cast<long long>(routed_diff), c.report["timing_s"]["layers"].get<double>(),
          g.report["timing_s"]["layers"].get<double>());
      EXPECT_EQ(skipped_diff, 0) << fx;
      if (std::string(fx) == "hy-dense-tiny") {
        EXPECT_EQ(routed_diff, 0) << fx;  // no router: same tokens
      }
      EXPECT_GT(groups, 0);
      pairs.push_back(std::move(pr));
    }
  for (const Pair& pr : pairs) {
    const double pc = test::heldout_ppl(pr.c.out, 32), pg = test::heldout_ppl(pr.g.out, 32);
    std::printf("[gpu-awq] %-22s ppl cpu %.5f gpu %.5f (%+.4f%%)\n", pr.label.c_str(), pc, pg, (pg / pc - 1) * 100);
    EXPECT_LE(std::fabs(pg / pc - 1), 1e-3) << pr.label << ": perplexity GPU vs CPU output";
  }
}

}  // namespace
}  // namespace angelslim
