// Calibration statistics of linear inputs (SPEC 4.1, 4.3.2, 4.4.2) shared by every calibration backend: what a
// pass collects (StatsSpec), the host copy of the result (LayerStats) and the CPU collector (HostStatsObserver).
// Statistics are kept per input-sharing group (q/k/v, gate/up of one MLP, o, down): members see the same input.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "angelslim/core/device_matrix.h"
#include "angelslim/model/hunyuan.h"

namespace angelslim {

// The input-sharing group of a linear (SPEC 4.1 table): the rel_name of its first member, e.g.
// "self_attn.q_proj" for q/k/v, "mlp.experts.3.gate_proj" for that expert's gate/up; o and down alone.
std::string input_group(const LinearId& id);
// Whether `id` is the first member of its group (q, o, gate, down): collectors observe only those.
bool is_group_leader(const LinearId& id);

// What a calibration pass collects.
struct StatsSpec {
  bool abs_max = false;          // every group: max |x| over real tokens (non-finite input: InvalidInput)
  std::set<LinearKind> hessian;  // groups whose leader kind is listed: Σ_t x_t x_tᵀ (fp32)
  // A backend with a device keeps the Gram matrices there (LayerStats::Gram::device) for a solver on that device.
  bool keep_on_device = false;
  bool any() const { return abs_max || !hessian.empty(); }
};

// The Hessian of one input group, H = (2/N) XᵀX [k, k] fp32 row-major, exactly symmetric: held on the host, or as
// XᵀX on a device with the factor 2/N (the same fp32 product gives H wherever it is formed). Copies share it.
class Hessian {
 public:
  Hessian() = default;
  Hessian(int64_t k, int64_t tokens, std::vector<float> host);
  Hessian(int64_t k, int64_t tokens, float scale, std::shared_ptr<const DeviceMatrix> device);
  int64_t k() const { return k_; }
  int64_t tokens() const { return tokens_; }
  bool empty() const { return tokens_ == 0; }
  // H on the host. A device Hessian is downloaded and scaled on the first call (once; safe from several threads).
  std::span<const float> host() const;
  // The device copy (XᵀX, unscaled) and the factor, or nullptr for a host Hessian.
  const DeviceMatrix* device() const { return device_.get(); }
  float scale() const { return scale_; }

 private:
  struct Host {
    std::once_flag once;
    std::vector<float> h;
  };
  int64_t k_ = 0, tokens_ = 0;
  float scale_ = 0.0f;
  std::shared_ptr<const DeviceMatrix> device_;
  std::shared_ptr<Host> host_;
};

// Host copy of what one pass collected over all calibration tokens of one layer.
struct LayerStats {
  struct AbsMax {
    float amax = 0.0f;
    int64_t tokens = 0;
  };
  struct Gram {
    int64_t k = 0;           // input width
    int64_t tokens = 0;      // rows accumulated
    std::vector<float> xtx;  // [k, k] fp32 row-major, exactly symmetric, Σ_t x_t x_tᵀ (unscaled)
    // [k, k] instead of xtx where the backend kept it on its device (StatsSpec::keep_on_device).
    std::shared_ptr<const DeviceMatrix> device;
  };
  std::map<std::string, AbsMax> abs_max;  // by input_group()
  std::map<std::string, Gram> gram;       // by input_group()

  // Abs-max of the input of linear `id` (via its group); amax 0 and 0 tokens when no token reached it.
  AbsMax abs_max_of(const LinearId& id) const;
  // H = (2/N) XᵀX [k, k] fp32 row-major, exactly symmetric, for the group of `id`, moved out. Empty (and
  // *tokens = 0) when no token reached the group. The same fp32 scaling on every backend.
  std::vector<float> take_hessian(const LinearId& id, int64_t* tokens);
  // The same H where it is (a device Gram matrix stays there), moved out; empty() when no token reached the group.
  Hessian take(const LinearId& id);

 private:
  // The group's Gram matrix, moved out; nullopt when no token reached the group.
  std::optional<Gram> take_gram(const LinearId& id);
};

// The CPU collector: a LinearObserver that fills a LayerStats from host activations. Throws InvalidInput on a
// non-finite activation (naming the linear and layer).
class HostStatsObserver : public LinearObserver {
 public:
  explicit HostStatsObserver(StatsSpec spec) : spec_(std::move(spec)) {}
  void observe(const LinearId& id, const float* x, int64_t n_tokens, int64_t n_in, const int64_t* token_index) override;
  // The statistics, Gram matrices mirrored to full symmetric form; the observer is left empty.
  LayerStats take();

 private:
  StatsSpec spec_;
  LayerStats stats_;
};

}  // namespace angelslim
