// The GPU calibration backend (issue 6, SPEC 4.1 steps 4-5): calibration activations resident on the GPU in ragged
// batches (bf16 in the bf16 forward mode, where that is lossless; fp32 otherwise), spilled to pinned host memory past
// a budget; one CudaDecoderLayer per layer, weights streamed through pinned staging; abs-max and Hessian collectors
// on the device. Implements CalibBackend, so the FP8 and GPTQ quantizers run on it unchanged.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "angelslim/backend/cuda_layer.h"
#include "angelslim/calib/backend.h"

namespace angelslim::cuda {

// Starts the CUDA runtime on `device` (its primary context) and cuBLAS, so that a caller can overlap their start-up
// (a few hundred ms) with host work on another thread. Errors are left for the real initialisation to report.
void warm_up(int device);

// A device observer that is also told where each ragged batch starts (its first token's index in the calibration
// set) before the batch runs through the layer (AWQ's statistics: cuda_awq.cpp).
class CudaBatchObserver : public CudaLinearObserver {
 public:
  virtual void begin_batch(CudaContext& ctx, int64_t first_token, int64_t n_tokens) = 0;
};

class Fp8WeightQuantizer;  // src/backend/cuda/fp8_weights.h

// A matrix on the GPU, complete when handed out (its stream was synchronised): a Gram matrix a pass left there
// (StatsSpec::keep_on_device) for the GPU GPTQ solver, or that solver's W_hat for linear_changed_on_device.
class CudaDeviceMatrix : public DeviceMatrix {
 public:
  // `release`, when set, takes the buffer back at destruction (for reuse) instead of freeing it.
  CudaDeviceMatrix(int device, int64_t rows, int64_t cols, DeviceBuffer<float> m,
                   std::function<void(DeviceBuffer<float>&&)> release = {})
      : device_(device), rows_(rows), cols_(cols), m_(std::move(m)), release_(std::move(release)) {}
  ~CudaDeviceMatrix() override {
    if (release_) release_(std::move(m_));
  }
  CudaDeviceMatrix(const CudaDeviceMatrix&) = delete;
  CudaDeviceMatrix& operator=(const CudaDeviceMatrix&) = delete;
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  // A synchronous copy (cudaMemcpy: safe from any thread, whatever its streams do).
  std::vector<float> to_host() const override;
  int device() const { return device_; }
  const float* data() const { return m_.data(); }

 private:
  int device_;
  int64_t rows_, cols_;
  DeviceBuffer<float> m_;  // at least rows × cols
  std::function<void(DeviceBuffer<float>&&)> release_;
};

class CudaCalibActivations : public CalibBackend {
 public:
  // samples: token ids per sample (each >= 1 token, ids < vocab_size: InvalidInput otherwise). Embeds them.
  CudaCalibActivations(const ModelConfig& cfg, const TensorStore& store,
                       const std::vector<std::vector<int32_t>>& samples, bool bf16_storage,
                       const CudaCalibOptions& options);
  ~CudaCalibActivations() override;

  const char* device_name() const override { return "cuda"; }
  int64_t n_samples() const override { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t n_tokens() const override { return offsets_.back(); }
  LayerStats observe_stats(const DecoderLayer& layer, const ForwardOptions& opt, const StatsSpec& spec) override;
  LayerStats advance_stats(const DecoderLayer& layer, const ForwardOptions& opt, const StatsSpec& spec) override;
  void linear_changed(const DecoderLayer& layer, const LinearId& id) override;
  bool linear_changed_on_device(const DecoderLayer& layer, const LinearId& id, const DeviceMatrix& w) override;
  // FP8 weights from the device copy of the layer (cuda_fp8.cpp); off with ANGELSLIM_CUDA_LEGACY=1 or
  // ANGELSLIM_CUDA_FP8_WEIGHTS=0. Declines (host path) for linears whose device weights are not exactly the host's
  // (fp32 weights that bf16 cannot hold, in the bf16 forward mode).
  bool fp8_weights_on_device() const override;
  bool quantize_fp8_weights(const DecoderLayer& layer, std::span<const LinearId> ids, std::span<const int> group,
                            bool per_channel, std::vector<Fp8Weight>& out, std::vector<float>& err) override;
  nlohmann::json report() const override;

  CudaContext& context() { return ctx_; }
  // Runs `layer` over every batch with `observer` (no statistics of its own); replaces the activations by the
  // layer's outputs when `advance` (opt.stop_after must then be kNone).
  void run_observed(const DecoderLayer& layer, const ForwardOptions& opt, CudaBatchObserver& observer, bool advance);
  // Forgets the uploaded layer: its host weights or norms changed beyond what linear_changed reports (AWQ folding),
  // so the next pass uploads it again.
  void invalidate_layer();
  int64_t sample_begin(int64_t s) const { return offsets_[static_cast<std::size_t>(s)]; }
  int64_t sample_len(int64_t s) const { return sample_begin(s + 1) - sample_begin(s); }
  // The activations as host fp32 [n_tokens, d_model], samples back to back (tests, debugging).
  std::vector<float> download_activations();
  int64_t n_batches() const { return static_cast<int64_t>(batches_.size()); }
  int64_t n_spilled_batches() const;
  // Stage cache passes (see run()): passes that started past the layer input, and its device bytes.
  int64_t stage_cache_hits() const { return stage_hits_; }
  int64_t stage_cache_bytes() const { return stage_bytes_; }

 private:
  struct Batch {
    int64_t t0 = 0, n = 0;      // first token, tokens
    std::vector<int64_t> segs;  // sequence offsets within the batch, [0 .. n]
    bool on_device = true;
    DeviceBuffer<uint16_t> dev16;   // [n, d_model] bf16 (bf16 storage, resident)
    DeviceBuffer<float> dev32;      // [n, d_model] fp32 (fp32 storage, resident)
    PinnedBuffer<uint16_t> host16;  // spilled, bf16 storage
    PinnedBuffer<float> host32;     // spilled, fp32 storage
  };
  class StatsCollector;

  void plan_batches(int64_t batch_tokens);
  int64_t auto_budget() const;
  void embed(const TensorStore& store, const std::vector<std::vector<int32_t>>& samples);
  CudaDecoderLayer& bind(const DecoderLayer& layer, const ForwardOptions& opt);
  LayerStats run(const DecoderLayer& layer, const ForwardOptions& opt, const StatsSpec& spec, bool advance,
                 CudaBatchObserver* batch_observer = nullptr);
  // Enqueues the upload of spilled batch b into staging slot `slot` on the copy stream.
  void prefetch(std::size_t b, int slot);
  // The stage cache: GPTQ observes a layer four times (stopping after each stage's inputs) and then propagates it,
  // each pass from the layer input. The intermediate results a pass computes -- attention output (o_proj input),
  // residual stream after attention (h), dense MLP's down_proj input -- are kept for all tokens in the storage dtype
  // (bf16 where every such value is bf16 already) while the linears before them are unchanged (linear_changed), so
  // the next pass starts there. Only for observing passes without abs-max statistics or batch observers, with every
  // batch resident and enough free memory; ANGELSLIM_CUDA_STAGE_CACHE=0 turns it off.
  enum Piece { kPieceAttn = 0, kPieceH = 1, kPieceAct = 2 };
  void stage_invalidate(int first_piece);
  // linear_changed's work; device_w: the new weights on this device (false where they cannot be taken from there).
  bool update_resident_linear(const DecoderLayer& layer, const LinearId& id, const float* device_w);
  bool stage_reserve(const CudaDecoderLayer& L);
  void stage_store(int piece, const Batch& b, const float* src, int64_t width);
  void stage_load(int piece, const Batch& b, float* dst, int64_t width);
  void sample_memory();

  ModelConfig cfg_;
  CudaCalibOptions options_;
  bool bf16_;
  std::size_t elem_bytes_;  // 2 (bf16) or 4 (fp32)
  std::vector<float> inv_freq_;
  std::vector<int64_t> offsets_;  // [n_samples + 1] token offsets
  std::vector<Batch> batches_;

  CudaContext ctx_;
  WeightStager stager_;
  cudaStream_t copy_stream_ = nullptr;
  cudaEvent_t loaded_[2] = {nullptr, nullptr}, computed_[2] = {nullptr, nullptr};
  DeviceBuffer<unsigned char> staging_[2];  // spilled batches in flight, storage dtype
  DeviceBuffer<float> x_;                   // fp32 batch the layer runs on [batch_tokens, d_model]

  std::unique_ptr<CudaDecoderLayer> layer_;
  const DecoderLayer* layer_src_ = nullptr;
  int64_t budget_bytes_ = 0;
  int64_t peak_gpu_bytes_ = 0;
  int64_t baseline_gpu_bytes_ = 0;  // used on the device before this backend allocated anything
  int64_t layers_uploaded_ = 0, linear_updates_ = 0, device_linear_updates_ = 0;
  double upload_s_ = 0.0, embed_s_ = 0.0, pass_s_ = 0.0;  // pass_s_: wall time of the layer passes (upload included)
  int64_t passes_ = 0;
  int64_t two_term_linears_ = 0, three_term_linears_ = 0;

  std::unique_ptr<Fp8WeightQuantizer> fp8_;
  int64_t fp8_layers_ = 0, fp8_declined_ = 0;
  double fp8_s_ = 0.0;

  bool stage_enabled_ = true;
  bool stage_valid_[3] = {false, false, false};
  int64_t stage_width_[3] = {0, 0, 0};  // values per token of each piece
  DeviceBuffer<unsigned char> stage_[3];  // [n_tokens, width] in the storage dtype
  int64_t stage_hits_ = 0, stage_bytes_ = 0;
};

}  // namespace angelslim::cuda
