// Calibration statistics shared by the backends; see include/angelslim/calib/stats.h.
#include "angelslim/calib/stats.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "angelslim/core/error.h"

namespace angelslim {

std::string input_group(const LinearId& id) {
  LinearId g = id;
  switch (id.kind) {
    case LinearKind::kQ:
    case LinearKind::kK:
    case LinearKind::kV:
      g.kind = LinearKind::kQ;
      break;
    case LinearKind::kGate:
    case LinearKind::kUp:
      g.kind = LinearKind::kGate;
      break;
    default:
      break;
  }
  return g.rel_name();
}

bool is_group_leader(const LinearId& id) {
  return id.kind != LinearKind::kK && id.kind != LinearKind::kV && id.kind != LinearKind::kUp;
}

LayerStats::AbsMax LayerStats::abs_max_of(const LinearId& id) const {
  auto it = abs_max.find(input_group(id));
  return it == abs_max.end() ? AbsMax{} : it->second;
}

namespace {

// H = scale · XᵀX in place: the one FP32 product every route forms H with.
void scale_in_place(std::vector<float>& v, float scale) {
  for (auto& x : v) x *= scale;
}

}  // namespace

Hessian::Hessian(int64_t k, int64_t tokens, std::vector<float> host)
    : k_(k), tokens_(tokens), host_(std::make_shared<Host>()) {
  host_->h = std::move(host);  // [k, k] expected: the solvers check the size and name a mismatch
  std::call_once(host_->once, [] {});
}

Hessian::Hessian(int64_t k, int64_t tokens, float scale, std::shared_ptr<const DeviceMatrix> device)
    : k_(k), tokens_(tokens), scale_(scale), device_(std::move(device)), host_(std::make_shared<Host>()) {
  ANGELSLIM_ASSERT(device_ != nullptr);
}

std::span<const float> Hessian::host() const {
  if (!host_) return {};
  std::call_once(host_->once, [&] {
    std::vector<float> h = device_->to_host();
    ANGELSLIM_ASSERT(h.size() == static_cast<std::size_t>(k_ * k_));
    scale_in_place(h, scale_);
    host_->h = std::move(h);
  });
  return host_->h;
}

std::optional<LayerStats::Gram> LayerStats::take_gram(const LinearId& id) {
  auto it = gram.find(input_group(id));
  if (it == gram.end() || it->second.tokens == 0) return std::nullopt;
  Gram g = std::move(it->second);
  gram.erase(it);
  return g;
}

Hessian LayerStats::take(const LinearId& id) {
  std::optional<Gram> g = take_gram(id);
  if (!g) return {};
  const float s = 2.0f / static_cast<float>(g->tokens);
  if (g->device) return Hessian(g->k, g->tokens, s, std::move(g->device));
  ANGELSLIM_ASSERT(g->xtx.size() == static_cast<std::size_t>(g->k * g->k));
  scale_in_place(g->xtx, s);
  return Hessian(g->k, g->tokens, std::move(g->xtx));
}

std::vector<float> LayerStats::take_hessian(const LinearId& id, int64_t* tokens) {
  std::optional<Gram> g = take_gram(id);
  *tokens = g ? g->tokens : 0;
  if (!g) return {};
  if (g->device) g->xtx = g->device->to_host();
  ANGELSLIM_ASSERT(g->xtx.size() == static_cast<std::size_t>(g->k * g->k));
  scale_in_place(g->xtx, 2.0f / static_cast<float>(g->tokens));
  return std::move(g->xtx);
}

void HostStatsObserver::observe(const LinearId& id, const float* x, int64_t n, int64_t k, const int64_t*) {
  if (!is_group_leader(id)) return;  // k/v/up see the input of q/gate
  const std::string key = input_group(id);
  if (spec_.abs_max) {
    LayerStats::AbsMax& s = stats_.abs_max[key];
    float m = s.amax;
    for (int64_t i = 0; i < n * k; ++i) {
      const float a = std::fabs(x[i]);
      if (!(a <= 3.4e38f))
        throw InvalidInput(fmt::format("non-finite activation entering {} (layer {})", id.full_name(), id.layer));
      m = std::max(m, a);
    }
    s.amax = m;
    s.tokens += n;
  }
  if (spec_.hessian.count(id.kind)) {
    LayerStats::Gram& g = stats_.gram[key];
    if (g.xtx.empty()) {
      g.k = k;
      g.xtx.assign(static_cast<std::size_t>(k * k), 0.0f);
    }
    if (n == 0) return;
    // Upper triangle (row-major) by SYRK; mirrored once in take().
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(k), static_cast<int>(n), 1.0f, x,
                static_cast<int>(k), 1.0f, g.xtx.data(), static_cast<int>(k));
    g.tokens += n;
  }
}

LayerStats HostStatsObserver::take() {
  for (auto& [key, g] : stats_.gram)
    for (int64_t r = 0; r < g.k; ++r)
      for (int64_t c = r + 1; c < g.k; ++c)
        g.xtx[static_cast<std::size_t>(c * g.k + r)] = g.xtx[static_cast<std::size_t>(r * g.k + c)];
  return std::move(stats_);
}

}  // namespace angelslim
