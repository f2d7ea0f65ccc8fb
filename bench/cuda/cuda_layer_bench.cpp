// GPU vs CPU time of one Hunyuan decoder layer forward on hunyuan-0.5B shapes (d_model 1024, d_ff 3584, 16 heads,
// 8 KV heads, head_dim 128; SPEC 1.4) with random bf16-valued weights, medians of several runs (CUDA events on the
// GPU, steady_clock on the CPU), plus the attention op alone at 2048 and 8192 tokens and a GPU-vs-CPU parity line.
// --ragged 1: instead, the calibration batch of the 0.5B benchmark (128 sequences: 46 of 2048 tokens, 82 of 72..2143,
// ~185k tokens, one ragged batch): attention per sequence (cuBLAS GEMMs + softmax) vs the fused ragged kernel, and
// the layer's cumulative time up to each stop point with the path of ANGELSLIM_CUDA_ATTENTION.
// Usage: angelslim_cuda_bench [--tokens N] [--gpu-reps R] [--cpu-reps C] [--threads T] [--ragged 1]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "angelslim/backend/cuda_layer.h"
#include "angelslim/backend/cuda_ops.h"
#include "angelslim/core/dtype.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/ops/cpu_ops.h"

namespace {

using namespace angelslim;

std::vector<float> rand_bf16(std::size_t n, float a, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(-a, a);
  std::vector<float> v(n);
  for (auto& x : v) x = round_bf16(u(rng));
  return v;
}

Linear rand_linear(int64_t n_out, int64_t n_in, std::mt19937_64& rng) {
  Linear l;
  l.n_out = n_out;
  l.n_in = n_in;
  l.w = rand_bf16(static_cast<std::size_t>(n_out * n_in), std::sqrt(3.0f / static_cast<float>(n_in)), rng);
  return l;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// Median milliseconds of `reps` runs of fn on the context's stream (after 3 warm-ups); `before` runs untimed.
template <class Before, class Fn>
double time_gpu(cuda::CudaContext& ctx, int reps, Before before, Fn fn) {
  cudaEvent_t a, b;
  ANGELSLIM_CUDA_CHECK(cudaEventCreate(&a));
  ANGELSLIM_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> ms;
  for (int r = 0; r < reps + 3; ++r) {
    before();
    ANGELSLIM_CUDA_CHECK(cudaEventRecord(a, ctx.stream()));
    fn();
    ANGELSLIM_CUDA_CHECK(cudaEventRecord(b, ctx.stream()));
    ANGELSLIM_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    ANGELSLIM_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    if (r >= 3) ms.push_back(t);
  }
  ANGELSLIM_CUDA_CHECK(cudaEventDestroy(a));
  ANGELSLIM_CUDA_CHECK(cudaEventDestroy(b));
  return median(ms);
}

template <class Fn>
double time_cpu(int reps, Fn fn) {
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(ms);
}

// The calibration batch of the 0.5B benchmark, GPU only (the CPU would take minutes a pass).
int run_ragged(const ModelConfig& cfg, const DecoderLayer& layer, const std::vector<float>& inv_freq, int reps) {
  std::mt19937_64 rng(7);
  std::vector<int64_t> offsets{0};
  std::uniform_int_distribution<int64_t> len_dist(72, 2143);
  for (int i = 0; i < 128; ++i) offsets.push_back(offsets.back() + ((i * 46) % 128 < 46 ? 2048 : len_dist(rng)));
  const int64_t n = offsets.back(), d_model = cfg.d_model, head_dim = cfg.head_dim;
  const int64_t qd = cfg.n_heads * head_dim, kvd = cfg.n_kv_heads * head_dim;
  double sum_sq = 0;
  for (std::size_t i = 0; i + 1 < offsets.size(); ++i)
    sum_sq += static_cast<double>(offsets[i + 1] - offsets[i]) * static_cast<double>(offsets[i + 1] - offsets[i]);
  std::printf("ragged batch: %zu sequences, %lld tokens; causal attention %.1f GFLOP (QK^T + PV)\n", offsets.size() - 1,
              static_cast<long long>(n), 2.0 * sum_sq * static_cast<double>(head_dim * cfg.n_heads) * 1e-9);
  cuda::CudaContext ctx(0);
  // Attention alone on bf16-valued random q/k/v.
  const auto q = rand_bf16(static_cast<std::size_t>(n * qd), 1.5f, rng);
  const auto k = rand_bf16(static_cast<std::size_t>(n * kvd), 1.5f, rng);
  const auto v = rand_bf16(static_cast<std::size_t>(n * kvd), 1.0f, rng);
  auto dq = cuda::to_device(ctx, q), dk = cuda::to_device(ctx, k), dv = cuda::to_device(ctx, v);
  cuda::DeviceBuffer<float> o1(q.size()), o2(q.size());
  cuda::AttentionWorkspace gws;
  cuda::VarlenAttentionWorkspace vws;
  const double ms_gemm = time_gpu(
      ctx, reps, [] {},
      [&] {
        for (std::size_t i = 0; i + 1 < offsets.size(); ++i) {
          const int64_t b = offsets[i], len = offsets[i + 1] - b;
          cuda::attention_bf16_gemm(ctx, dq.data() + b * qd, dk.data() + b * kvd, dv.data() + b * kvd, len, cfg.n_heads,
                                    cfg.n_kv_heads, head_dim, o1.data() + b * qd, gws);
        }
      });
  const double ms_fused = time_gpu(
      ctx, reps, [] {},
      [&] {
        cuda::attention_varlen_bf16(ctx, dq.data(), dk.data(), dv.data(), offsets, cfg.n_heads, cfg.n_kv_heads,
                                    head_dim, o2.data(), vws);
      });
  const auto h1 = cuda::to_host(ctx, o1.data(), q.size()), h2 = cuda::to_host(ctx, o2.data(), q.size());
  std::printf(
      "attention, per-sequence GEMMs + softmax: %9.3f ms\nattention, fused ragged kernel:         %9.3f ms "
      "(%.2fx; rel_l2 between the two %.2e)\n",
      ms_gemm, ms_fused, ms_gemm / ms_fused, rel_l2(h2, h1));

  // The layer (bf16 mode, bf16 weights) on the batch, cumulative up to each stop point.
  const auto x0 = rand_bf16(static_cast<std::size_t>(n * d_model), 1.7f, rng);
  auto dx0 = cuda::to_device(ctx, x0);
  cuda::DeviceBuffer<float> dx(x0.size());
  cuda::CudaDecoderLayer gl(ctx, cfg, layer, inv_freq, cuda::DeviceWeights::kBF16);
  const std::pair<const char*, StopAfter> stops[] = {{"input norm", StopAfter::kQkvInput},
                                                     {"+ q/k/v, rope, qk-norm, attention", StopAfter::kOInput},
                                                     {"+ o_proj, residual, post norm", StopAfter::kMlpInput},
                                                     {"+ MLP, residual (whole layer)", StopAfter::kNone}};
  std::printf("layer (attention path: %s), cumulative ms:\n", cuda::attention_path_name(cuda::attention_path()));
  for (const auto& [what, stop] : stops) {
    ForwardOptions opt;
    opt.round_bf16 = true;
    opt.stop_after = stop;
    const double ms = time_gpu(
        ctx, reps,
        [&] {
          ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(dx.data(), dx0.data(), x0.size() * sizeof(float),
                                               cudaMemcpyDeviceToDevice, ctx.stream()));
        },
        [&] { gl.forward(dx.data(), n, 0, opt, nullptr, nullptr, offsets); });
    std::printf("  %-40s %9.3f\n", what, ms);
  }
  return 0;
}

int run(int argc, char** argv) {
  int64_t n = 2048;
  int gpu_reps = 20, cpu_reps = 3, threads = 0;
  bool ragged = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const long v = std::strtol(argv[i + 1], nullptr, 10);
    if (k == "--tokens")
      n = v;
    else if (k == "--gpu-reps")
      gpu_reps = static_cast<int>(v);
    else if (k == "--cpu-reps")
      cpu_reps = static_cast<int>(v);
    else if (k == "--threads")
      threads = static_cast<int>(v);
    else if (k == "--ragged")
      ragged = v != 0;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (cuda::device_count() == 0) {
    std::fprintf(stderr, "angelslim_cuda_bench: no CUDA device\n");
    return 2;
  }
  cpu::set_num_threads(threads);

  ModelConfig cfg;
  cfg.family = ModelFamily::kDense;
  cfg.d_model = 1024;
  cfg.d_ff = 3584;
  cfg.n_layers = 1;
  cfg.n_heads = 16;
  cfg.n_kv_heads = 8;
  cfg.head_dim = 128;
  cfg.rms_norm_eps = 1e-5f;
  cfg.rope_kind = "dynamic";
  cfg.rope_theta = 10000.0;
  cfg.rope_alpha = 1000.0;
  cfg.use_qk_norm = true;
  const int64_t d_model = cfg.d_model, head_dim = cfg.head_dim, qd = cfg.n_heads * head_dim,
                kvd = cfg.n_kv_heads * head_dim;

  std::mt19937_64 rng(42);
  DecoderLayer layer;
  layer.index = 0;
  layer.input_norm = rand_bf16(d_model, 0.05f, rng);
  layer.post_norm = rand_bf16(d_model, 0.05f, rng);
  layer.q_norm = rand_bf16(head_dim, 0.05f, rng);
  layer.k_norm = rand_bf16(head_dim, 0.05f, rng);
  for (auto* v : {&layer.input_norm, &layer.post_norm, &layer.q_norm, &layer.k_norm})
    for (auto& x : *v) x = round_bf16(1.0f + x);
  layer.q = rand_linear(qd, d_model, rng);
  layer.k = rand_linear(kvd, d_model, rng);
  layer.v = rand_linear(kvd, d_model, rng);
  layer.o = rand_linear(d_model, qd, rng);
  layer.mlp.gate = rand_linear(cfg.d_ff, d_model, rng);
  layer.mlp.up = rand_linear(cfg.d_ff, d_model, rng);
  layer.mlp.down = rand_linear(d_model, cfg.d_ff, rng);
  const auto inv_freq = rope_inv_freq(cfg);
  if (ragged) return run_ragged(cfg, layer, inv_freq, gpu_reps);
  const auto x0 = rand_bf16(static_cast<std::size_t>(n * d_model), 1.7f, rng);

  const double lin_flop =
      2.0 * static_cast<double>(n) * static_cast<double>(d_model) * (qd + 2 * kvd + qd + 3 * cfg.d_ff);
  const double attn_flop =
      2.0 * static_cast<double>(n) * static_cast<double>(n) * head_dim * cfg.n_heads;  // causal QKᵀ + PV
  std::printf("decoder layer, hunyuan-0.5B shapes, %lld tokens: %.1f GFLOP (linears %.1f, attention %.1f)\n",
              static_cast<long long>(n), (lin_flop + attn_flop) * 1e-9, lin_flop * 1e-9, attn_flop * 1e-9);

  // CPU reference.
  std::vector<float> cpu_out[2];
  double cpu_ms[2];
  for (int mode = 0; mode < 2; ++mode) {
    ForwardOptions opt;
    opt.round_bf16 = mode == 1;
    cpu_ms[mode] = time_cpu(cpu_reps, [&] {
      cpu_out[mode] = x0;
      decoder_layer_forward(cfg, layer, inv_freq, cpu_out[mode].data(), n, 0, opt);
    });
  }

  cuda::CudaContext ctx(0);
  cudaDeviceProp prop{};
  ANGELSLIM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  auto dx0 = cuda::to_device(ctx, x0);
  cuda::DeviceBuffer<float> dx(x0.size());
  struct Mode {
    const char* name;
    bool rb;
    cuda::DeviceWeights w;
  };
  const Mode modes[] = {{"fp32 (fp32 weights, SGEMM)", false, cuda::DeviceWeights::kF32},
                        {"bf16 mode (fp32 weights, SGEMM)", true, cuda::DeviceWeights::kF32},
                        {"bf16 mode (bf16 weights, BF16 GEMM)", true, cuda::DeviceWeights::kBF16}};
  std::printf("\n%-38s %12s %12s %10s %12s %12s\n", "mode", "GPU ms", "CPU ms", "speed-up", "GPU TFLOP/s",
              "rel_l2 vs CPU");
  for (const auto& m : modes) {
    cuda::CudaDecoderLayer gl(ctx, cfg, layer, inv_freq, m.w);
    ForwardOptions opt;
    opt.round_bf16 = m.rb;
    const double ms = time_gpu(
        ctx, gpu_reps,
        [&] {
          ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(dx.data(), dx0.data(), x0.size() * sizeof(float),
                                               cudaMemcpyDeviceToDevice, ctx.stream()));
        },
        [&] { gl.forward(dx.data(), n, 0, opt); });
    const auto got = cuda::to_host(ctx, dx.data(), x0.size());
    const int c = m.rb ? 1 : 0;
    std::printf("%-38s %12.3f %12.1f %9.0fx %12.1f %12.2e\n", m.name, ms, cpu_ms[c], cpu_ms[c] / ms,
                (lin_flop + attn_flop) / (ms * 1e-3) * 1e-12, rel_l2(got, cpu_out[c]));
  }

  // The attention op alone.
  std::printf("\n%-38s %12s %12s %12s\n", "attention op (16 heads, 8 KV, head_dim=128)", "GPU ms", "CPU ms",
              "GPU TFLOP/s");
  for (int64_t na : {int64_t{2048}, int64_t{8192}}) {
    const auto q = rand_bf16(static_cast<std::size_t>(na * qd), 1.5f, rng);
    const auto k = rand_bf16(static_cast<std::size_t>(na * kvd), 1.5f, rng);
    const auto v = rand_bf16(static_cast<std::size_t>(na * kvd), 1.0f, rng);
    auto dq = cuda::to_device(ctx, q), dk = cuda::to_device(ctx, k), dv = cuda::to_device(ctx, v);
    cuda::DeviceBuffer<float> dout(q.size());
    const double flop = 2.0 * static_cast<double>(na) * static_cast<double>(na) * head_dim * cfg.n_heads;
    for (bool rb : {false, true}) {
      const double ms = time_gpu(
          ctx, gpu_reps, [] {},
          [&] {
            cuda::attention(ctx, dq.data(), dk.data(), dv.data(), na, 0, cfg.n_heads, cfg.n_kv_heads, head_dim,
                            dout.data(), rb);
          });
      double cms = NAN;
      if (na == 2048) {
        std::vector<float> out(q.size());
        cms = time_cpu(1, [&] {
          cpu::attention(q.data(), k.data(), v.data(), na, 0, cfg.n_heads, cfg.n_kv_heads, head_dim, out.data(), rb);
        });
      }
      std::printf("%-38s %12.3f %12.1f %12.1f\n", (std::to_string(na) + " tokens" + (rb ? " bf16" : " fp32")).c_str(),
                  ms, cms, flop / (ms * 1e-3) * 1e-12);
    }
  }
  std::printf("\ndevice: %s (%d SMs); CPU threads: %d\n", prop.name, prop.multiProcessorCount, cpu::num_threads());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "angelslim_cuda_bench: %s\n", e.what());
    return 1;
  }
}
