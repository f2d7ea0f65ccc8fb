// GPU calibration backend; see include/angelslim/backend/cuda_calib.h. The batch loop mirrors the CPU engine
// (src/calib/engine.cpp): the same ragged batches of whole samples (larger here), the same layer math
// (CudaDecoderLayer), the same statistics per input group (calib/stats.h), accumulated on the device.
#include "angelslim/backend/cuda_calib.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"
#include "backend/cuda/fp8_weights.h"

namespace angelslim {

bool cuda_calib_available() { return cuda::device_count() > 0; }

void require_cuda_device() {
  ANGELSLIM_CHECK(cuda_calib_available(), Unsupported,
                  "--device cuda: no CUDA device is available (cudaGetDeviceCount found none); use --device cpu");
}

std::unique_ptr<CalibBackend> make_cuda_calib(const ModelConfig& cfg, const TensorStore& store,
                                              const std::vector<std::vector<int32_t>>& samples, bool bf16_storage,
                                              const CudaCalibOptions& options) {
  require_cuda_device();
  return std::make_unique<cuda::CudaCalibActivations>(cfg, store, samples, bf16_storage, options);
}

namespace cuda {

void warm_up(int device) {
  if (cudaSetDevice(device) != cudaSuccess) return;
  (void)cudaFree(nullptr);
  try {  // loads cuBLAS (cuda_libs.h); a failure shows again, with its message, where the context is made
    cublasHandle_t h = nullptr;
    if (cublas().create(&h) == CUBLAS_STATUS_SUCCESS) (void)cublas().destroy(h);
  } catch (const Unsupported&) {
  }
}

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int64_t used_gpu_bytes() {
  std::size_t free_b = 0, total_b = 0;
  ANGELSLIM_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return static_cast<int64_t>(total_b - free_b);
}

// Largest Hessian/abs-max-relevant sizes of a layer from the config.
struct LayerShape {
  int64_t params = 0;      // linear weights (router excluded)
  int64_t max_linear = 0;  // elements of the largest linear
  int64_t max_in = 0;      // widest linear input
  int64_t max_dff = 0;
  int64_t hessian_floats = 0;  // Σ K² over the input groups
};

LayerShape layer_shape(const ModelConfig& cfg, int64_t l) {
  const int64_t d = cfg.d_model, qd = cfg.n_heads * cfg.head_dim, kvd = cfg.n_kv_heads * cfg.head_dim;
  LayerShape s;
  auto lin = [&](int64_t out, int64_t in) {
    s.params += out * in;
    s.max_linear = std::max(s.max_linear, out * in);
    s.max_in = std::max(s.max_in, in);
  };
  lin(qd, d);
  lin(kvd, d);
  lin(kvd, d);
  lin(d, qd);
  s.hessian_floats = d * d + qd * qd;
  auto mlp = [&](int64_t dff) {
    lin(dff, d);
    lin(dff, d);
    lin(d, dff);
    s.max_dff = std::max(s.max_dff, dff);
    s.hessian_floats += d * d + dff * dff;
  };
  if (cfg.family == ModelFamily::kMoE) {
    const auto li = static_cast<std::size_t>(l);
    if (cfg.n_shared_experts.at(li) > 0) mlp(cfg.shared_d_ff(l));
    for (int64_t e = 0; e < cfg.n_experts; ++e) mlp(cfg.moe_d_ff.at(li));
  } else {
    mlp(cfg.d_ff);
  }
  return s;
}

}  // namespace

// Device-side statistics of one pass (calib/stats.h semantics): per input group, a running abs-max slot and/or a
// Gram matrix Σ xᵀx. In the bf16 forward mode every observed input is bf16-representable (each is produced at a
// BF16 storage point), so the Gram matrix runs as a BF16 GEMM with FP32 accumulation; fp32 mode uses SSYRK.
class CudaCalibActivations::StatsCollector : public CudaLinearObserver {
 public:
  StatsCollector(CudaContext& ctx, StatsSpec spec, bool bf16_inputs, int64_t max_groups)
      : spec_(std::move(spec)), bf16_(bf16_inputs) {
    if (spec_.abs_max) {
      amax_.reset(static_cast<std::size_t>(std::max<int64_t>(max_groups, 1)));
      ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(amax_.data(), 0, amax_.size() * sizeof(float), ctx.stream()));
    }
  }

  void observe(CudaContext& ctx, const LinearId& id, const float* x, int64_t n, int64_t k, const int64_t*) override {
    if (!is_group_leader(id)) return;  // k/v/up see the input of q/gate
    const std::string key = input_group(id);
    if (spec_.abs_max) {
      const auto it = slots_.try_emplace(key, Slot{id, static_cast<int64_t>(slots_.size()), 0}).first;
      ANGELSLIM_ASSERT(it->second.index < static_cast<int64_t>(amax_.size()));
      abs_max_accumulate(ctx, x, n * k, amax_.data() + it->second.index);
      it->second.tokens += n;
    }
    if (spec_.hessian.count(id.kind)) {
      Gram& g = grams_[key];
      if (g.h.empty()) {
        g.k = k;
        g.h.reset(static_cast<std::size_t>(k * k));
        ANGELSLIM_CUDA_CHECK(cudaMemsetAsync(g.h.data(), 0, g.h.size() * sizeof(float), ctx.stream()));
      }
      ANGELSLIM_ASSERT(g.k == k);
      if (n == 0) return;
      if (bf16_) {
        x16_.ensure(static_cast<std::size_t>(n * k));
        f32_to_bf16(ctx, x, x16_.data(), n * k);
        hessian_accumulate_bf16(ctx, x16_.data(), n, k, g.h.data());
      } else {
        hessian_accumulate(ctx, x, n, k, 1.0f, g.h.data());
      }
      g.tokens += n;
    }
  }

  // Downloads what was collected (synchronising the stream) and frees the device accumulators.
  LayerStats finish(CudaContext& ctx) {
    LayerStats out;
    if (spec_.abs_max && !slots_.empty()) {
      std::vector<float> a(slots_.size());
      download(ctx, amax_.data(), a.size(), a.data());
      for (const auto& [key, s] : slots_) {
        const float m = a[static_cast<std::size_t>(s.index)];
        if (!(m <= 3.4e38f))
          throw InvalidInput(fmt::format("non-finite activation entering {} (layer {})", s.id.full_name(), s.id.layer));
        out.abs_max[key] = LayerStats::AbsMax{m, s.tokens};
      }
    }
    if (spec_.keep_on_device && !grams_.empty()) ctx.synchronize();  // the matrices are complete when handed out
    for (auto& [key, g] : grams_) {
      LayerStats::Gram& h = out.gram[key];
      h.k = g.k;
      h.tokens = g.tokens;
      if (g.tokens > 0 && spec_.keep_on_device) {
        h.device = std::make_shared<CudaDeviceMatrix>(ctx.device(), g.k, g.k, std::move(g.h));
      } else if (g.tokens > 0) {
        h.xtx.resize(static_cast<std::size_t>(g.k * g.k));
        download(ctx, g.h.data(), h.xtx.size(), h.xtx.data());
      }
      g.h = DeviceBuffer<float>();
    }
    return out;
  }

 private:
  struct Slot {
    LinearId id;
    int64_t index = 0;
    int64_t tokens = 0;
  };
  struct Gram {
    int64_t k = 0, tokens = 0;
    DeviceBuffer<float> h;  // [k, k] fp32
  };
  StatsSpec spec_;
  bool bf16_;
  DeviceBuffer<float> amax_;
  std::map<std::string, Slot> slots_;
  std::map<std::string, Gram> grams_;
  DeviceBuffer<uint16_t> x16_;
};

std::vector<float> CudaDeviceMatrix::to_host() const {
  ANGELSLIM_CUDA_CHECK(cudaSetDevice(device_));
  std::vector<float> h(static_cast<std::size_t>(rows_ * cols_));
  ANGELSLIM_CUDA_CHECK(cudaMemcpy(h.data(), m_.data(), h.size() * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

CudaCalibActivations::CudaCalibActivations(const ModelConfig& cfg, const TensorStore& store,
                                           const std::vector<std::vector<int32_t>>& samples, bool bf16_storage,
                                           const CudaCalibOptions& options)
    : cfg_(cfg),
      options_(options),
      bf16_(bf16_storage),
      elem_bytes_(bf16_storage ? 2 : 4),
      inv_freq_(rope_inv_freq(cfg)),
      ctx_(options.device),
      stager_(ctx_) {
  ANGELSLIM_CHECK(options.batch_tokens >= 1, InvalidInput, "cuda calibration: batch_tokens = {} (expected >= 1)",
                  options.batch_tokens);
  offsets_.push_back(0);
  for (const auto& s : samples) {
    ANGELSLIM_CHECK(!s.empty(), InvalidInput, "cuda calibration: a calibration sample has no token");
    offsets_.push_back(offsets_.back() + static_cast<int64_t>(s.size()));
  }
  ANGELSLIM_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  for (int i = 0; i < 2; ++i) {
    ANGELSLIM_CUDA_CHECK(cudaEventCreateWithFlags(&loaded_[i], cudaEventDisableTiming));
    ANGELSLIM_CUDA_CHECK(cudaEventCreateWithFlags(&computed_[i], cudaEventDisableTiming));
  }
  if (const char* e = std::getenv("ANGELSLIM_CUDA_STAGE_CACHE"); (e && std::string(e) == "0") || cuda_legacy())
    stage_enabled_ = false;
  baseline_gpu_bytes_ = used_gpu_bytes();
  plan_batches(options.batch_tokens);
  const auto t0 = Clock::now();
  embed(store, samples);
  embed_s_ = since(t0);
  sample_memory();
}

CudaCalibActivations::~CudaCalibActivations() {
  (void)cudaStreamSynchronize(ctx_.stream());
  if (copy_stream_) {
    (void)cudaStreamSynchronize(copy_stream_);
    (void)cudaStreamDestroy(copy_stream_);
  }
  for (int i = 0; i < 2; ++i) {
    if (loaded_[i]) (void)cudaEventDestroy(loaded_[i]);
    if (computed_[i]) (void)cudaEventDestroy(computed_[i]);
  }
}

int64_t CudaCalibActivations::auto_budget() const {
  std::size_t free_b = 0, total_b = 0;
  ANGELSLIM_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  LayerShape m;
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    const LayerShape s = layer_shape(cfg_, l);
    m.params = std::max(m.params, s.params);
    m.max_linear = std::max(m.max_linear, s.max_linear);
    m.max_in = std::max(m.max_in, s.max_in);
    m.max_dff = std::max(m.max_dff, s.max_dff);
    m.hessian_floats = std::max(m.hessian_floats, s.hessian_floats);
  }
  const int64_t d = cfg_.d_model, qd = cfg_.n_heads * cfg_.head_dim, kvd = cfg_.n_kv_heads * cfg_.head_dim;
  const int64_t n = options_.batch_tokens;
  // Per-token fp32 scratch of CudaDecoderLayer (a, o, q, attn, k, v, gate, up, fake-quant input, MoE buffers) and of
  // this backend (x, two staging slots), plus the bf16 GEMM inputs.
  const int64_t per_token = 4 * (2 * d + 2 * qd + 2 * kvd + 2 * m.max_dff + m.max_in + 4 * d + 2 * cfg_.n_experts + 8) +
                            2 * m.max_in + 2 * static_cast<int64_t>(elem_bytes_) * d + 2 * m.max_in;
  const int64_t reserve = 4 * m.params            // weights: bf16, up to two terms after GPTQ
                          + 12 * m.max_linear     // fp32 staging + two bf16 split scratches
                          + n * per_token         // batch scratch
                          + 4 * m.hessian_floats  // device Gram matrices
                          + (int64_t{1} << 30)    // cuBLAS, allocator slack, other processes' growth
                          + static_cast<int64_t>(total_b / 50);
  return std::max<int64_t>(0, static_cast<int64_t>(free_b) - reserve);
}

void CudaCalibActivations::plan_batches(int64_t batch_tokens) {
  budget_bytes_ = options_.activation_budget_bytes ? *options_.activation_budget_bytes : auto_budget();
  const int64_t row_bytes = cfg_.d_model * static_cast<int64_t>(elem_bytes_);
  int64_t used = 0;
  for (int64_t s0 = 0; s0 < n_samples();) {
    int64_t s1 = s0 + 1;
    while (s1 < n_samples() &&
           offsets_[static_cast<std::size_t>(s1 + 1)] - offsets_[static_cast<std::size_t>(s0)] <= batch_tokens)
      ++s1;
    Batch b;
    b.t0 = offsets_[static_cast<std::size_t>(s0)];
    b.n = offsets_[static_cast<std::size_t>(s1)] - b.t0;
    b.segs.push_back(0);
    for (int64_t s = s0; s < s1; ++s) b.segs.push_back(offsets_[static_cast<std::size_t>(s + 1)] - b.t0);
    const int64_t bytes = b.n * row_bytes;
    b.on_device = used + bytes <= budget_bytes_;
    const auto count = static_cast<std::size_t>(b.n * cfg_.d_model);
    if (b.on_device) {
      used += bytes;
      if (bf16_)
        b.dev16.reset(count);
      else
        b.dev32.reset(count);
    } else if (bf16_) {
      b.host16.reset(count);
    } else {
      b.host32.reset(count);
    }
    batches_.push_back(std::move(b));
    s0 = s1;
  }
  int64_t max_n = 1;
  for (const auto& b : batches_) max_n = std::max(max_n, b.n);
  x_.reset(static_cast<std::size_t>(max_n * cfg_.d_model));
  if (n_spilled_batches() > 0) {
    for (auto& s : staging_) s.reset(static_cast<std::size_t>(max_n * row_bytes));
    spdlog::info("cuda: {} of {} activation batches spilled to pinned host memory (budget {:.2f} GiB)",
                 n_spilled_batches(), batches_.size(), static_cast<double>(budget_bytes_) / (1 << 30));
  }
}

int64_t CudaCalibActivations::n_spilled_batches() const {
  return std::count_if(batches_.begin(), batches_.end(), [](const Batch& b) { return !b.on_device; });
}

void CudaCalibActivations::embed(const TensorStore& store, const std::vector<std::vector<int32_t>>& samples) {
  const int64_t d = cfg_.d_model;
  const auto& emb = store.get("model.embed_tokens.weight");
  if (emb.shape != std::vector<int64_t>{cfg_.vocab_size, d})
    throw FormatError(fmt::format("{}: model.embed_tokens.weight has the wrong shape", store.dir().string()));
  const std::size_t src_row = static_cast<std::size_t>(d) * dtype_size(emb.dtype);
  std::vector<const int32_t*> ids;  // token t -> its id
  ids.reserve(static_cast<std::size_t>(n_tokens()));
  for (const auto& s : samples)
    for (const int32_t& id : s) {
      if (id < 0 || id >= cfg_.vocab_size)
        throw InvalidInput(
            fmt::format("calibration token id {} is outside the vocabulary [0, {})", id, cfg_.vocab_size));
      ids.push_back(&id);
    }
  // A bf16 table with every batch on the device: the table goes up once (half the bytes of the gathered fp32 rows
  // of a long calibration set) and the rows are gathered there, bit for bit as below.
  const bool all_on_device = std::all_of(batches_.begin(), batches_.end(), [](const Batch& b) { return b.on_device; });
  const std::size_t table_n = static_cast<std::size_t>(cfg_.vocab_size * d);
  std::size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) free_bytes = 0;
  if (bf16_ && emb.dtype == DType::kBF16 && all_on_device && free_bytes > table_n * 2 + (std::size_t{512} << 20)) {
    DeviceBuffer<uint16_t> table(table_n);
    upload(ctx_, reinterpret_cast<const uint16_t*>(emb.data), table.size(), table.data());
    std::vector<int32_t> flat(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) flat[i] = *ids[i];
    const auto dids = to_device(ctx_, flat);
    for (auto& b : batches_) gather_rows_bf16(ctx_, table.data(), d, dids.data() + b.t0, b.n, b.dev16.data());
    ctx_.synchronize();
    return;
  }
  // Rows are gathered on host threads into a pinned fp32 buffer, uploaded, then stored (bf16 or fp32); spilled
  // batches are written on the host directly. Two pinned buffers alternate so gathering overlaps the copies.
  const unsigned n_threads = std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
  auto gather = [&](int64_t t0, int64_t n, float* dst) {
    std::vector<std::thread> pool;
    const int64_t per = (n + n_threads - 1) / n_threads;
    for (unsigned w = 0; w < n_threads; ++w) {
      const int64_t a = w * per, b = std::min(n, a + per);
      if (a >= b) break;
      pool.emplace_back([&, a, b] {
        for (int64_t t = a; t < b; ++t)
          convert_to_f32(emb.dtype,
                         emb.data + src_row * static_cast<std::size_t>(*ids[static_cast<std::size_t>(t0 + t)]),
                         dst + t * d, static_cast<std::size_t>(d));
      });
    }
    for (auto& th : pool) th.join();
  };
  int64_t max_n = 0;
  for (const auto& b : batches_) max_n = std::max(max_n, b.n);
  PinnedBuffer<float> pinned[2];
  cudaEvent_t done[2];
  for (auto& e : done) ANGELSLIM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  int slot = 0;
  for (auto& b : batches_) {
    const auto count = static_cast<std::size_t>(b.n * d);
    if (!b.on_device) {
      if (bf16_) {
        std::vector<float> tmp(count);
        gather(b.t0, b.n, tmp.data());
        for (std::size_t i = 0; i < count; ++i) b.host16.data()[i] = ::angelslim::f32_to_bf16(tmp[i]);
      } else {
        gather(b.t0, b.n, b.host32.data());
      }
      continue;
    }
    if (pinned[slot].size() == 0) pinned[slot].reset(static_cast<std::size_t>(max_n * d));
    ANGELSLIM_CUDA_CHECK(cudaEventSynchronize(done[slot]));
    gather(b.t0, b.n, pinned[slot].data());
    float* dst32 = bf16_ ? x_.data() : b.dev32.data();
    ANGELSLIM_CUDA_CHECK(
        cudaMemcpyAsync(dst32, pinned[slot].data(), count * sizeof(float), cudaMemcpyHostToDevice, ctx_.stream()));
    if (bf16_) f32_to_bf16(ctx_, x_.data(), b.dev16.data(), b.n * d);
    ANGELSLIM_CUDA_CHECK(cudaEventRecord(done[slot], ctx_.stream()));
    slot ^= 1;
  }
  ctx_.synchronize();
  for (auto& e : done) (void)cudaEventDestroy(e);
}

void CudaCalibActivations::sample_memory() {
  peak_gpu_bytes_ = std::max(peak_gpu_bytes_, used_gpu_bytes() - baseline_gpu_bytes_);
}

CudaDecoderLayer& CudaCalibActivations::bind(const DecoderLayer& layer, const ForwardOptions& opt) {
  if (layer_ && layer_src_ == &layer && layer_->index() == layer.index) return *layer_;
  const auto t0 = Clock::now();
  CudaDecoderLayer::Scratch scratch;  // the previous layer's scratch buffers go to the new one
  if (layer_) scratch = layer_->take_scratch();
  layer_.reset();  // frees the previous layer's weights first
  stage_invalidate(kPieceAttn);
  const DeviceWeights w = opt.round_bf16 ? DeviceWeights::kBF16Exact : DeviceWeights::kF32;
  layer_ = std::make_unique<CudaDecoderLayer>(ctx_, cfg_, layer, inv_freq_, w, &stager_, std::move(scratch));
  layer_src_ = &layer;
  ++layers_uploaded_;
  two_term_linears_ += layer_->n_two_term();
  three_term_linears_ += layer_->n_three_term();
  upload_s_ += since(t0);
  return *layer_;
}

namespace {

const Linear& linear_in(const DecoderLayer& layer, const LinearId& id) {
  switch (id.kind) {
    case LinearKind::kQ:
      return layer.q;
    case LinearKind::kK:
      return layer.k;
    case LinearKind::kV:
      return layer.v;
    case LinearKind::kO:
      return layer.o;
    default: {
      const Mlp& m = id.expert >= 0 ? layer.experts.at(static_cast<std::size_t>(id.expert)) : layer.mlp;
      return id.kind == LinearKind::kGate ? m.gate : id.kind == LinearKind::kUp ? m.up : m.down;
    }
  }
}

}  // namespace

void CudaCalibActivations::linear_changed(const DecoderLayer& layer, const LinearId& id) {
  (void)update_resident_linear(layer, id, nullptr);
}

bool CudaCalibActivations::linear_changed_on_device(const DecoderLayer& layer, const LinearId& id,
                                                    const DeviceMatrix& w) {
  const auto* m = dynamic_cast<const CudaDeviceMatrix*>(&w);
  const Linear& lin = linear_in(layer, id);
  if (!m || m->device() != ctx_.device() || m->rows() != lin.n_out || m->cols() != lin.n_in) return false;
  return update_resident_linear(layer, id, m->data());
}

bool CudaCalibActivations::update_resident_linear(const DecoderLayer& layer, const LinearId& id,
                                                  const float* device_w) {
  const bool resident = layer_ && layer_src_ == &layer && layer_->index() == layer.index;
  // From the device only into the resident layer, in a weight format that takes them (else the caller's host copy).
  if (device_w && (!resident || layer_->weights() == DeviceWeights::kBF16)) return false;
  // The kept results downstream of the linear are stale now.
  switch (id.kind) {
    case LinearKind::kQ:
    case LinearKind::kK:
    case LinearKind::kV:
      stage_invalidate(kPieceAttn);
      break;
    case LinearKind::kO:
      stage_invalidate(kPieceH);
      break;
    case LinearKind::kGate:
    case LinearKind::kUp:
      stage_invalidate(kPieceAct);
      break;
    default:
      break;
  }
  if (!resident) return true;  // re-uploaded whole on next use
  const auto t0 = Clock::now();
  const int64_t two = layer_->n_two_term(), three = layer_->n_three_term();
  if (device_w)
    ANGELSLIM_CHECK(layer_->update_linear_from_device(id, linear_in(layer, id), device_w), Internal,
                    "{}: the device weights were not taken", id.full_name());
  else
    layer_->update_linear(id, linear_in(layer, id));
  two_term_linears_ += layer_->n_two_term() - two;
  three_term_linears_ += layer_->n_three_term() - three;
  ++linear_updates_;
  if (device_w) ++device_linear_updates_;
  upload_s_ += since(t0);
  return true;
}

void CudaCalibActivations::stage_invalidate(int first_piece) {
  for (int p = first_piece; p < 3; ++p) stage_valid_[p] = false;
}

bool CudaCalibActivations::stage_reserve(const CudaDecoderLayer& L) {
  if (!stage_enabled_) return false;
  const int64_t width[3] = {cfg_.n_heads * cfg_.head_dim, cfg_.d_model, L.dense_d_ff()};
  bool fits = true;
  int64_t bytes = 0;
  for (int p = 0; p < 3; ++p) {
    const int64_t b = n_tokens() * width[p] * static_cast<int64_t>(elem_bytes_);
    bytes += b;
    fits = fits && static_cast<int64_t>(stage_[p].size()) >= b;
  }
  if (fits) {
    for (int p = 0; p < 3; ++p) stage_width_[p] = width[p];
    return true;
  }
  for (auto& b : stage_) b = DeviceBuffer<unsigned char>();
  stage_bytes_ = 0;
  stage_invalidate(kPieceAttn);
  // What must stay free for the rest of the run: the statistics of the widest layer, the GPTQ workspace (FP64
  // factorisation, fp32 inverse factor and Hessian, weight-sized buffers) and slack.
  LayerShape m;
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    const LayerShape s = layer_shape(cfg_, l);
    m.max_linear = std::max(m.max_linear, s.max_linear);
    m.max_in = std::max(m.max_in, s.max_in);
    m.hessian_floats = std::max(m.hessian_floats, s.hessian_floats);
  }
  std::size_t free_b = 0, total_b = 0;
  ANGELSLIM_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const int64_t margin = 4 * m.hessian_floats + 16 * m.max_in * m.max_in + 24 * m.max_linear +
                         (int64_t{2} << 30) + static_cast<int64_t>(total_b / 50);
  if (static_cast<int64_t>(free_b) - bytes < margin) {
    spdlog::info("cuda: stage cache off ({:.2f} GiB needed, {:.2f} GiB free)", static_cast<double>(bytes) / (1 << 30),
                 static_cast<double>(free_b) / (1 << 30));
    stage_enabled_ = false;
    return false;
  }
  for (int p = 0; p < 3; ++p) {
    stage_width_[p] = width[p];
    stage_[p].reset(static_cast<std::size_t>(n_tokens() * width[p]) * elem_bytes_);
  }
  stage_bytes_ = bytes;
  return true;
}

void CudaCalibActivations::stage_store(int piece, const Batch& b, const float* src, int64_t width) {
  const int64_t count = b.n * width;
  if (bf16_) {
    f32_to_bf16(ctx_, src, reinterpret_cast<uint16_t*>(stage_[piece].data()) + b.t0 * width, count);
  } else {
    ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(reinterpret_cast<float*>(stage_[piece].data()) + b.t0 * width, src,
                                         static_cast<std::size_t>(count) * sizeof(float), cudaMemcpyDeviceToDevice,
                                         ctx_.stream()));
  }
}

void CudaCalibActivations::stage_load(int piece, const Batch& b, float* dst, int64_t width) {
  const int64_t count = b.n * width;
  if (bf16_) {
    bf16_to_f32(ctx_, reinterpret_cast<const uint16_t*>(stage_[piece].data()) + b.t0 * width, dst, count);
  } else {
    ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(dst, reinterpret_cast<const float*>(stage_[piece].data()) + b.t0 * width,
                                         static_cast<std::size_t>(count) * sizeof(float), cudaMemcpyDeviceToDevice,
                                         ctx_.stream()));
  }
}

void CudaCalibActivations::prefetch(std::size_t b, int slot) {
  Batch& bt = batches_[b];
  const std::size_t bytes = static_cast<std::size_t>(bt.n * cfg_.d_model) * elem_bytes_;
  const void* src = bf16_ ? static_cast<const void*>(bt.host16.data()) : static_cast<const void*>(bt.host32.data());
  // The slot's previous batch was written back earlier on this same stream, so the copy is ordered after it.
  ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(staging_[slot].data(), src, bytes, cudaMemcpyHostToDevice, copy_stream_));
  ANGELSLIM_CUDA_CHECK(cudaEventRecord(loaded_[slot], copy_stream_));
}

LayerStats CudaCalibActivations::run(const DecoderLayer& layer, const ForwardOptions& opt, const StatsSpec& spec,
                                     bool advance, CudaBatchObserver* batch_observer) {
  ANGELSLIM_CHECK(opt.round_bf16 || !bf16_, InvalidInput,
                  "cuda calibration: activations are stored as bf16, the fp32 forward needs fp32 storage");
  const auto t_pass = Clock::now();
  CudaDecoderLayer& L = bind(layer, opt);
  const int64_t d = cfg_.d_model;
  StatsCollector stats(ctx_, spec, opt.round_bf16, static_cast<int64_t>(layer_linear_ids(cfg_, layer.index).size()));
  CudaLinearObserver* obs = spec.any() ? &stats : nullptr;
  if (batch_observer) {
    ANGELSLIM_ASSERT(!spec.any());
    obs = batch_observer;
  }
  // Spilled batches stream through two device slots: the upload of the next one (copy stream) overlaps this one's
  // compute; the write-back of a slot (copy stream) precedes the next upload into it.
  std::vector<std::size_t> spilled;
  for (std::size_t b = 0; b < batches_.size(); ++b)
    if (!batches_[b].on_device) spilled.push_back(b);
  std::size_t next_spill = 0;
  int slot_of_next = 0;
  auto prefetch_next = [&] {
    if (next_spill < spilled.size()) {
      prefetch(spilled[next_spill], slot_of_next);
      ++next_spill;
      slot_of_next ^= 1;
    }
  };
  prefetch_next();
  // Stage cache (see the header): where this pass starts, and which of its results are kept.
  using Start = CudaDecoderLayer::Start;
  const StopAfter stop = opt.stop_after;
  const bool dense = !L.is_moe();
  const bool cacheable = stage_enabled_ && !batch_observer && !spec.abs_max && spilled.empty();
  auto observes = [&](std::initializer_list<LinearKind> kinds) {
    for (const LinearKind k : kinds)
      if (spec.hessian.count(k)) return true;
    return false;
  };
  using K = LinearKind;
  Start start = Start::kInput;
  if (cacheable && stop != StopAfter::kQkvInput) {
    if (dense && stop == StopAfter::kNone && stage_valid_[kPieceH] && stage_valid_[kPieceAct] &&
        !observes({K::kQ, K::kK, K::kV, K::kO, K::kGate, K::kUp}))
      start = Start::kDownInput;
    else if (dense && stop != StopAfter::kOInput && stage_valid_[kPieceH] && !observes({K::kQ, K::kK, K::kV, K::kO}))
      start = Start::kResidual;
    else if (stage_valid_[kPieceAttn] && !observes({K::kQ, K::kK, K::kV}))
      start = Start::kAttn;
  }
  const bool keep_any = cacheable && !advance && stop != StopAfter::kQkvInput;
  bool keep[3] = {keep_any && start == Start::kInput,
                  keep_any && dense && stop == StopAfter::kMlpInput && (start == Start::kInput || start == Start::kAttn),
                  keep_any && dense && stop == StopAfter::kNone && start != Start::kDownInput};
  if ((keep[0] || keep[1] || keep[2]) && !stage_reserve(L)) keep[0] = keep[1] = keep[2] = false;
  const bool observe_only = !advance && !batch_observer && stage_enabled_;
  if (start != Start::kInput) ++stage_hits_;
  int slot = 0;
  for (std::size_t bi = 0; bi < batches_.size(); ++bi) {
    Batch& b = batches_[bi];
    const int64_t count = b.n * d;
    float* x = x_.data();
    const bool x_is_h = start == Start::kResidual || start == Start::kDownInput;
    if (b.on_device) {
      if (advance && !bf16_)
        x = b.dev32.data();  // in place
      if (x_is_h)
        stage_load(kPieceH, b, x, d);
      else if (bf16_)
        bf16_to_f32(ctx_, b.dev16.data(), x, count);
      else if (!advance)
        ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(x, b.dev32.data(), static_cast<std::size_t>(count) * sizeof(float),
                                             cudaMemcpyDeviceToDevice, ctx_.stream()));
    } else {
      prefetch_next();  // the following spilled batch, into the other slot
      ANGELSLIM_CUDA_CHECK(cudaStreamWaitEvent(ctx_.stream(), loaded_[slot], 0));
      if (bf16_)
        bf16_to_f32(ctx_, reinterpret_cast<const uint16_t*>(staging_[slot].data()), x, count);
      else
        ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(x, staging_[slot].data(), static_cast<std::size_t>(count) * sizeof(float),
                                             cudaMemcpyDeviceToDevice, ctx_.stream()));
    }
    if (batch_observer) batch_observer->begin_batch(ctx_, b.t0, b.n);
    if (start == Start::kAttn) stage_load(kPieceAttn, b, L.attn_scratch(b.n), stage_width_[kPieceAttn]);
    if (start == Start::kDownInput) stage_load(kPieceAct, b, L.down_input_scratch(b.n), stage_width_[kPieceAct]);
    L.forward_from(start, x, b.n, opt, obs, b.segs, observe_only);
    if (keep[kPieceAttn]) stage_store(kPieceAttn, b, L.attn_scratch(b.n), stage_width_[kPieceAttn]);
    if (keep[kPieceH]) stage_store(kPieceH, b, x, stage_width_[kPieceH]);
    if (keep[kPieceAct]) stage_store(kPieceAct, b, L.down_input_scratch(b.n), stage_width_[kPieceAct]);
    if (advance) {
      if (b.on_device) {
        if (bf16_) f32_to_bf16(ctx_, x, b.dev16.data(), count);
      } else {
        if (bf16_)
          f32_to_bf16(ctx_, x, reinterpret_cast<uint16_t*>(staging_[slot].data()), count);
        else
          ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(staging_[slot].data(), x,
                                               static_cast<std::size_t>(count) * sizeof(float),
                                               cudaMemcpyDeviceToDevice, ctx_.stream()));
        ANGELSLIM_CUDA_CHECK(cudaEventRecord(computed_[slot], ctx_.stream()));
        ANGELSLIM_CUDA_CHECK(cudaStreamWaitEvent(copy_stream_, computed_[slot], 0));
        void* dst = bf16_ ? static_cast<void*>(b.host16.data()) : static_cast<void*>(b.host32.data());
        ANGELSLIM_CUDA_CHECK(cudaMemcpyAsync(dst, staging_[slot].data(), static_cast<std::size_t>(count) * elem_bytes_,
                                             cudaMemcpyDeviceToHost, copy_stream_));
      }
    } else if (!b.on_device) {
      // The slot is read by this batch's compute; the next upload into it must wait for that.
      ANGELSLIM_CUDA_CHECK(cudaEventRecord(computed_[slot], ctx_.stream()));
      ANGELSLIM_CUDA_CHECK(cudaStreamWaitEvent(copy_stream_, computed_[slot], 0));
    }
    if (!b.on_device) slot ^= 1;
  }
  sample_memory();
  LayerStats out = stats.finish(ctx_);
  ANGELSLIM_CUDA_CHECK(cudaStreamSynchronize(copy_stream_));
  ctx_.synchronize();
  for (int p = 0; p < 3; ++p)
    if (keep[p]) stage_valid_[p] = true;
  if (advance) stage_invalidate(kPieceAttn);  // the activations moved on to the next layer
  pass_s_ += since(t_pass);
  ++passes_;
  return out;
}

LayerStats CudaCalibActivations::observe_stats(const DecoderLayer& layer, const ForwardOptions& opt,
                                               const StatsSpec& spec) {
  return run(layer, opt, spec, false);
}

LayerStats CudaCalibActivations::advance_stats(const DecoderLayer& layer, const ForwardOptions& opt,
                                               const StatsSpec& spec) {
  ANGELSLIM_ASSERT(opt.stop_after == StopAfter::kNone);
  return run(layer, opt, spec, true);
}

void CudaCalibActivations::run_observed(const DecoderLayer& layer, const ForwardOptions& opt,
                                        CudaBatchObserver& observer, bool advance) {
  ANGELSLIM_ASSERT(!advance || opt.stop_after == StopAfter::kNone);
  (void)run(layer, opt, StatsSpec{}, advance, &observer);
}

void CudaCalibActivations::invalidate_layer() {
  ctx_.synchronize();
  stage_invalidate(kPieceAttn);
  layer_.reset();
  layer_src_ = nullptr;
}

std::vector<float> CudaCalibActivations::download_activations() {
  const int64_t d = cfg_.d_model;
  std::vector<float> out(static_cast<std::size_t>(n_tokens() * d));
  for (auto& b : batches_) {
    const auto count = static_cast<std::size_t>(b.n * d);
    float* dst = out.data() + b.t0 * d;
    if (b.on_device) {
      if (bf16_) {
        bf16_to_f32(ctx_, b.dev16.data(), x_.data(), b.n * d);
        download(ctx_, x_.data(), count, dst);
      } else {
        download(ctx_, b.dev32.data(), count, dst);
      }
    } else if (bf16_) {
      for (std::size_t i = 0; i < count; ++i) dst[i] = ::angelslim::bf16_to_f32(b.host16.data()[i]);
    } else {
      std::memcpy(dst, b.host32.data(), count * sizeof(float));
    }
  }
  return out;
}

nlohmann::json CudaCalibActivations::report() const {
  int dev = 0;
  (void)cudaGetDevice(&dev);
  cudaDeviceProp prop{};
  std::string name = "?";
  if (cudaGetDeviceProperties(&prop, dev) == cudaSuccess) name = prop.name;
  int64_t bytes = 0, host_bytes = 0;
  for (const auto& b : batches_) {
    const int64_t x = b.n * cfg_.d_model * static_cast<int64_t>(elem_bytes_);
    bytes += x;
    if (!b.on_device) host_bytes += x;
  }
  return {{"device", "cuda"},
          {"gpu", name},
          {"activations",
           {{"dtype", bf16_ ? "bf16" : "fp32"},
            {"bytes", bytes},
            {"device_bytes", bytes - host_bytes},
            {"host_bytes", host_bytes},
            {"batches", batches_.size()},
            {"spilled_batches", n_spilled_batches()},
            {"batch_tokens", options_.batch_tokens},
            {"budget_bytes", budget_bytes_}}},
          {"weights",
           {{"layers_uploaded", layers_uploaded_},
            {"linear_updates", linear_updates_},
            {"linear_updates_from_device", device_linear_updates_},
            {"bytes_staged", stager_.bytes_uploaded()},
            {"two_term_linears", two_term_linears_},
            {"three_term_linears", three_term_linears_},
            {"upload_s", upload_s_}}},
          {"stage_cache", {{"enabled", stage_enabled_}, {"bytes", stage_bytes_}, {"hits", stage_hits_}}},
          {"fp8_weights", {{"layers", fp8_layers_}, {"declined", fp8_declined_}, {"seconds", fp8_s_}}},
          {"embed_s", embed_s_},
          {"passes", passes_},
          {"pass_s", pass_s_},
          {"attention", attention_path_name(attention_path())},
          {"peak_gpu_bytes", peak_gpu_bytes_}};
}

}  // namespace cuda
}  // namespace angelslim
