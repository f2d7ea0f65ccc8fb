// The GPU decoder layer (include/angelslim/backend/cuda_layer.h) against the CPU decoder_layer_forward on every layer
// of both fixtures (each layer fed the CPU output of the previous one, starting from real token embeddings).
// Tolerances (relative L2 over the layer output): fp32 mode 1e-4 (fp32 summation order only; measured ~1e-6);
// bf16 mode 1e-2 (the same storage points, where an fp32-ulp difference occasionally moves a value to the
// neighbouring bf16; measured ~1e-3), over the tokens whose MoE routing agrees; at most 2% of tokens may route
// differently (a near-tie of router probabilities that bf16 noise can flip, SPEC 3.6 "differences confined to
// near-ties"). Observers, the KV cache and FP8 activation quantization are checked the same way (FP8: 3e-3 / 2e-2,
// since a 1-ulp input difference at an e4m3 rounding edge moves that value by 1/16).
#include "angelslim/backend/cuda_layer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/model/model_config.h"
#include "angelslim/model/weight_loader.h"
#include "gpu/gpu_test_util.h"

namespace angelslim {
namespace {

using cuda::CudaDecoderLayer;
using cuda::DeviceWeights;
using gputest::compare;
using gputest::ctx;

const std::string kData = ANGELSLIM_TEST_DATA;

struct Fixture {
  ModelConfig cfg;
  std::unique_ptr<TensorStore> store;
  std::vector<DecoderLayer> layers;
  std::vector<float> inv_freq;
  std::vector<float> embed;  // [vocab, d_model]
};

const Fixture& fixture(const std::string& name) {
  static std::map<std::string, Fixture> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  Fixture f;
  const std::string dir = kData + "/fixtures/" + name;
  f.cfg = load_model_config(dir);
  f.store = std::make_unique<TensorStore>(dir);
  for (int64_t l = 0; l < f.cfg.n_layers; ++l) f.layers.push_back(load_decoder_layer(*f.store, f.cfg, l));
  f.inv_freq = rope_inv_freq(f.cfg);
  f.embed = load_matrix(*f.store, "model.embed_tokens.weight", f.cfg.vocab_size, f.cfg.d_model);
  return cache.emplace(name, std::move(f)).first->second;
}

// Embeddings of the first n held-out tokens (real text), bf16-rounded in bf16 mode (the embedding storage point).
std::vector<float> embedded_tokens(const Fixture& f, int64_t n, bool rb) {
  std::ifstream in(kData + "/eval/heldout.hy-tiny.ids.bin", std::ios::binary);
  std::vector<int32_t> ids(static_cast<std::size_t>(n));
  in.read(reinterpret_cast<char*>(ids.data()), static_cast<std::streamsize>(n * sizeof(int32_t)));
  EXPECT_TRUE(in.good()) << "heldout ids";
  const int64_t d_model = f.cfg.d_model;
  std::vector<float> x(static_cast<std::size_t>(n * d_model));
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = ids[static_cast<std::size_t>(t)] % static_cast<int32_t>(f.cfg.vocab_size);
    for (int64_t c = 0; c < d_model; ++c) {
      const float v = f.embed[static_cast<std::size_t>(id * d_model + c)];
      x[static_cast<std::size_t>(t * d_model + c)] = rb ? round_bf16(v) : v;
    }
  }
  return x;
}

// Records router decisions on the CPU side.
class CpuRouteRecorder : public LinearObserver {
 public:
  void observe(const LinearId&, const float*, int64_t, int64_t, const int64_t*) override {}
  void routed(int64_t, const int32_t* experts, int64_t n, int64_t k) override { top.assign(experts, experts + n * k); }
  std::vector<int32_t> top;
};
class GpuRouteRecorder : public cuda::CudaLinearObserver {
 public:
  void observe(cuda::CudaContext&, const LinearId&, const float*, int64_t, int64_t, const int64_t*) override {}
  void routed(cuda::CudaContext& c, int64_t, const int32_t* experts, int64_t n, int64_t k) override {
    top = cuda::to_host(c, experts, static_cast<std::size_t>(n * k));
  }
  std::vector<int32_t> top;
};

// Relative L2 over the rows (tokens) where keep[t] is true.
gputest::ErrorStats compare_rows(const std::vector<float>& got, const std::vector<float>& ref, int64_t d_model,
                                 const std::vector<bool>& keep) {
  std::vector<float> g, r;
  for (std::size_t t = 0; t < keep.size(); ++t)
    if (keep[t]) {
      g.insert(g.end(), got.begin() + static_cast<std::ptrdiff_t>(t * d_model),
               got.begin() + static_cast<std::ptrdiff_t>((t + 1) * d_model));
      r.insert(r.end(), ref.begin() + static_cast<std::ptrdiff_t>(t * d_model),
               ref.begin() + static_cast<std::ptrdiff_t>((t + 1) * d_model));
    }
  return compare(g, r);
}

// Runs every layer of `name` on the CPU and the GPU from the same inputs and compares.
void check_fixture_layers(const std::string& name, int64_t n, bool rb, DeviceWeights weights) {
  const Fixture& f = fixture(name);
  const int64_t d_model = f.cfg.d_model;
  ForwardOptions opt;
  opt.round_bf16 = rb;
  auto x = embedded_tokens(f, n, rb);
  for (const auto& layer : f.layers) {
    CudaDecoderLayer gl(ctx(), f.cfg, layer, f.inv_freq, weights);
    EXPECT_EQ(gl.n_weights_rounded(), 0) << "fixture weights are bf16 values";
    auto dx = cuda::to_device(ctx(), x);
    GpuRouteRecorder groutes;
    gl.forward(dx.data(), n, 0, opt, &groutes);
    const auto got = cuda::to_host(ctx(), dx.data(), x.size());
    CpuRouteRecorder croutes;
    decoder_layer_forward(f.cfg, layer, f.inv_freq, x.data(), n, 0, opt, &croutes);  // x becomes the next input
    std::vector<bool> keep(static_cast<std::size_t>(n), true);
    int64_t n_flip = 0;
    if (layer.is_moe) {
      ASSERT_EQ(groutes.top.size(), croutes.top.size());
      for (int64_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < layer.top_k; ++i)
          if (groutes.top[t * layer.top_k + i] != croutes.top[t * layer.top_k + i]) keep[t] = false;
      for (bool k : keep) n_flip += !k;
    }
    const auto what = fmt::format("layer {} {} n={} {} weights={}", layer.index, name, n, rb ? "bf16" : "fp32",
                                  weights == DeviceWeights::kF32 ? "f32" : "bf16");
    std::printf("[gpu-parity] %s routing mismatches: %lld of %lld tokens\n", what.c_str(),
                static_cast<long long>(n_flip), static_cast<long long>(n));
    EXPECT_LE(static_cast<double>(n_flip), rb ? 0.02 * static_cast<double>(n) : 0.0) << what;
    EXPECT_CLOSE(what, compare_rows(got, x, d_model, keep), rb ? 1e-2 : 1e-4);
  }
}

#define REQUIRE_GPU_AND_DATA() ANGELSLIM_REQUIRE_GPU()

TEST(CudaLayer, DenseFp32MatchesCpu) {
  REQUIRE_GPU_AND_DATA();
  for (int64_t n : {1, 129}) check_fixture_layers("hy-dense-tiny", n, false, DeviceWeights::kF32);
}

TEST(CudaLayer, MoeFp32MatchesCpu) {
  REQUIRE_GPU_AND_DATA();
  // n = 1: top-2 of 8 experts leaves six experts with zero tokens.
  for (int64_t n : {1, 129}) check_fixture_layers("hy-moe-tiny", n, false, DeviceWeights::kF32);
}

TEST(CudaLayer, DenseBf16MatchesCpu) {
  REQUIRE_GPU_AND_DATA();
  for (auto w : {DeviceWeights::kF32, DeviceWeights::kBF16}) check_fixture_layers("hy-dense-tiny", 129, true, w);
  check_fixture_layers("hy-dense-tiny", 1, true, DeviceWeights::kBF16);
}

TEST(CudaLayer, MoeBf16MatchesCpu) {
  REQUIRE_GPU_AND_DATA();
  for (auto w : {DeviceWeights::kF32, DeviceWeights::kBF16}) check_fixture_layers("hy-moe-tiny", 129, true, w);
  check_fixture_layers("hy-moe-tiny", 1, true, DeviceWeights::kBF16);
}

// Every linear input the CPU observer sees, the GPU observer sees too: same order, ids, token indices, values.
struct Seen {
  std::string name;
  int64_t n = 0, n_in = 0;
  std::vector<float> x;
  std::vector<int64_t> idx;
};
class CpuRecorder : public LinearObserver {
 public:
  void observe(const LinearId& id, const float* x, int64_t n, int64_t n_in, const int64_t* idx) override {
    seen.push_back({id.full_name(), n, n_in, std::vector<float>(x, x + n * n_in),
                    idx ? std::vector<int64_t>(idx, idx + n) : std::vector<int64_t>{}});
  }
  std::vector<Seen> seen;
};
class GpuRecorder : public cuda::CudaLinearObserver {
 public:
  void observe(cuda::CudaContext& c, const LinearId& id, const float* x, int64_t n, int64_t n_in,
               const int64_t* idx) override {
    seen.push_back({id.full_name(), n, n_in, cuda::to_host(c, x, static_cast<std::size_t>(n * n_in)),
                    idx ? cuda::to_host(c, idx, static_cast<std::size_t>(n)) : std::vector<int64_t>{}});
  }
  std::vector<Seen> seen;
};

TEST(CudaLayer, ObserverSeesWhatTheCpuObserverSees) {
  REQUIRE_GPU_AND_DATA();
  for (const std::string name : {"hy-dense-tiny", "hy-moe-tiny"}) {
    const Fixture& f = fixture(name);
    const int64_t n = 97;
    auto x = embedded_tokens(f, n, false);
    const auto& layer = f.layers[1];
    CudaDecoderLayer gl(ctx(), f.cfg, layer, f.inv_freq, DeviceWeights::kF32);
    auto dx = cuda::to_device(ctx(), x);
    GpuRecorder g;
    gl.forward(dx.data(), n, 0, ForwardOptions{}, &g);
    CpuRecorder c;
    decoder_layer_forward(f.cfg, layer, f.inv_freq, x.data(), n, 0, ForwardOptions{}, &c);
    ASSERT_EQ(g.seen.size(), c.seen.size()) << name;
    // Dense: every linear once. MoE: experts that receive no token are not observed (as on the CPU).
    if (!layer.is_moe) {
      ASSERT_EQ(c.seen.size(), layer_linear_ids(f.cfg, 1).size()) << name;
    }
    for (std::size_t i = 0; i < c.seen.size(); ++i) {
      const auto& a = g.seen[i];
      const auto& b = c.seen[i];
      EXPECT_EQ(a.name, b.name) << i;
      EXPECT_EQ(a.n, b.n) << b.name;
      EXPECT_EQ(a.n_in, b.n_in) << b.name;
      EXPECT_EQ(a.idx, b.idx) << b.name;
      if (a.x.size() == b.x.size() && !b.x.empty()) EXPECT_CLOSE("observer " + b.name, compare(a.x, b.x), 1e-4);
    }
  }
}

TEST(CudaLayer, KvCacheChunksMatchCpu) {
  REQUIRE_GPU_AND_DATA();
  for (bool rb : {false, true}) {
    const Fixture& f = fixture("hy-dense-tiny");
    const auto& layer = f.layers[0];
    ForwardOptions opt;
    opt.round_bf16 = rb;
    const int64_t d_model = f.cfg.d_model, kvd = f.cfg.n_kv_heads * f.cfg.head_dim;
    const auto all = embedded_tokens(f, 130, rb);
    CudaDecoderLayer gl(ctx(), f.cfg, layer, f.inv_freq, rb ? DeviceWeights::kBF16 : DeviceWeights::kF32);
    cuda::CudaKvCache gcache(256, kvd);
    KvCache ccache;
    int64_t pos = 0;
    for (int64_t chunk : {100, 29, 1}) {
      std::vector<float> x(all.begin() + pos * d_model, all.begin() + (pos + chunk) * d_model);
      auto dx = cuda::to_device(ctx(), x);
      gl.forward(dx.data(), chunk, pos, opt, nullptr, &gcache);
      decoder_layer_forward(f.cfg, layer, f.inv_freq, x.data(), chunk, pos, opt, nullptr, &ccache);
      const auto what = fmt::format("kv-cache chunk pos={} n={} {}", pos, chunk, rb ? "bf16" : "fp32");
      EXPECT_CLOSE(what, compare(cuda::to_host(ctx(), dx.data(), x.size()), x), rb ? 1e-2 : 1e-4);
      pos += chunk;
      EXPECT_EQ(gcache.size(), pos);
    }
    EXPECT_EQ(ccache.n, gcache.size());
    EXPECT_CLOSE(std::string("kv-cache keys ") + (rb ? "bf16" : "fp32"),
                 compare(cuda::to_host(ctx(), gcache.k(), ccache.k.size()), ccache.k), rb ? 1e-2 : 1e-4);
    EXPECT_THROW(gcache.append(1000), InvalidInput);
  }
}

// FP8 activation quantization (static scales on attention, dynamic on the MLP) on the GPU equals the CPU's.
TEST(CudaLayer, Fp8ActivationQuantMatchesCpu) {
  REQUIRE_GPU_AND_DATA();
  for (const std::string name : {"hy-dense-tiny", "hy-moe-tiny"}) {
    const Fixture& f = fixture(name);
    const int64_t n = 129;
    DecoderLayer layer = f.layers[0];
    // Static scales from the inputs' abs-max (what calibration would measure), one per linear.
    class Amax : public LinearObserver {
     public:
      void observe(const LinearId& id, const float* x, int64_t n_tok, int64_t n_in, const int64_t*) override {
        float& a = amax[id.rel_name()];
        for (int64_t i = 0; i < n_tok * n_in; ++i) a = std::max(a, std::fabs(x[i]));
      }
      std::map<std::string, float> amax;
    } obs;
    auto x0 = embedded_tokens(f, n, false);
    {
      auto tmp = x0;
      decoder_layer_forward(f.cfg, layer, f.inv_freq, tmp.data(), n, 0, ForwardOptions{}, &obs);
    }
    const std::pair<Linear*, const char*> attn_lins[] = {{&layer.q, "self_attn.q_proj"},
                                                         {&layer.k, "self_attn.k_proj"},
                                                         {&layer.v, "self_attn.v_proj"},
                                                         {&layer.o, "self_attn.o_proj"}};
    for (auto [lin, rel] : attn_lins) {
      lin->act = ActQuant::kFp8Static;
      lin->input_scale = obs.amax.at(rel) / kFp8E4M3Max;
    }
    auto dyn = [](Mlp& m) {
      for (Linear* l : {&m.gate, &m.up, &m.down}) l->act = ActQuant::kFp8Dynamic;
    };
    if (!layer.is_moe || layer.has_shared) dyn(layer.mlp);
    for (auto& e : layer.experts) dyn(e);
    for (bool rb : {false, true}) {
      ForwardOptions opt;
      opt.round_bf16 = rb;
      auto x = x0;
      if (rb)
        for (auto& v : x) v = round_bf16(v);
      CudaDecoderLayer gl(ctx(), f.cfg, layer, f.inv_freq, rb ? DeviceWeights::kBF16 : DeviceWeights::kF32);
      auto dx = cuda::to_device(ctx(), x);
      GpuRouteRecorder groutes;
      gl.forward(dx.data(), n, 0, opt, &groutes);
      CpuRouteRecorder croutes;
      decoder_layer_forward(f.cfg, layer, f.inv_freq, x.data(), n, 0, opt, &croutes);
      std::vector<bool> keep(static_cast<std::size_t>(n), true);
      for (std::size_t i = 0; i < croutes.top.size(); ++i)
        if (groutes.top[i] != croutes.top[i]) keep[i / static_cast<std::size_t>(layer.top_k)] = false;
      const auto what = fmt::format("fp8-act layer 0 {} {}", name, rb ? "bf16" : "fp32");
      EXPECT_CLOSE(what, compare_rows(cuda::to_host(ctx(), dx.data(), x.size()), x, f.cfg.d_model, keep),
                   rb ? 2e-2 : 3e-3);
    }
  }
}

TEST(CudaLayer, RejectsFp32ModeWithBf16WeightsAndBadShapes) {
  REQUIRE_GPU_AND_DATA();
  const Fixture& f = fixture("hy-dense-tiny");
  CudaDecoderLayer gl(ctx(), f.cfg, f.layers[0], f.inv_freq, DeviceWeights::kBF16);
  cuda::DeviceBuffer<float> x(static_cast<std::size_t>(f.cfg.d_model));
  EXPECT_THROW(gl.forward(x.data(), 1, 0, ForwardOptions{}), InvalidInput);
  ModelConfig bad = f.cfg;
  bad.head_dim = 96;
  EXPECT_THROW(CudaDecoderLayer(ctx(), bad, f.layers[0], f.inv_freq, DeviceWeights::kF32), Unsupported);
  EXPECT_GT(gl.weight_bytes(), 0u);
}

}  // namespace
}  // namespace angelslim
