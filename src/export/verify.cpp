// Output validation; see include/angelslim/export/verify.h.
#include "angelslim/export/verify.h"

#include <cmath>
#include <map>

#include "angelslim/core/error.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/quant/ignore_match.h"

namespace angelslim {

namespace {

[[noreturn]] void fail(const std::filesystem::path& dir, const std::string& what) {
  throw Internal(fmt::format("{}: output verification failed: {}", dir.string(), what));
}

float scalar(const TensorStore& st, const std::string& name) {
  const auto& t = st.get(name);
  if (t.dtype != DType::kF32 || t.numel() != 1) fail(st.dir(), name + " must be one F32 value");
  const float v = t.to_f32()[0];
  if (!(v > 0.0f) || !std::isfinite(v)) fail(st.dir(), fmt::format("{} = {} is not finite and positive", name, v));
  return v;
}

}  // namespace

void verify_output(const std::filesystem::path& dir, const ModelConfig& cfg, const RunConfig& rc) {
  TensorStore st(dir);
  uint64_t bytes = 0;
  for (const auto& [n, t] : st.all()) bytes += t->nbytes;
  if (std::filesystem::exists(dir / "model.safetensors.index.json")) {
    const auto idx = nlohmann::json::parse(read_file(dir / "model.safetensors.index.json"));
    if (idx["metadata"]["total_size"].get<uint64_t>() != bytes) fail(dir, "index total_size differs from the byte sum");
  }
  if (!rc.quant.is_fp8()) return;
  const bool per_channel = rc.quant.weight == WeightGranularity::kPerChannel;
  const bool stat = rc.quant.algo == QuantAlgo::kFp8Static;
  IgnoreMatcher ignore(rc.quant.ignore_layers);
  const int64_t n_experts = cfg.family == ModelFamily::kMoE ? cfg.n_experts : 0;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    std::map<std::string, float> wscale, iscale;
    for (const auto& id : layer_linear_ids(cfg, l)) {
      const std::string m = id.full_name();
      const auto& w = st.get(m + ".weight");
      if (ignore.matches(m)) {
        if (w.dtype == DType::kF8E4M3) fail(dir, m + " is ignored but quantized");
        continue;
      }
      if (w.dtype != DType::kF8E4M3 || w.shape.size() != 2) fail(dir, m + ".weight must be a 2-D F8_E4M3 tensor");
      const auto& ws = st.get(m + ".weight_scale");
      if (per_channel) {
        if (ws.shape != std::vector<int64_t>{w.shape[0], 1}) fail(dir, m + ".weight_scale must be [out, 1]");
      } else {
        wscale[id.rel_name()] = scalar(st, m + ".weight_scale");
      }
      if (stat) iscale[id.rel_name()] = scalar(st, m + ".input_scale");
      else if (st.has(m + ".input_scale")) fail(dir, m + " has an input_scale under dynamic activations");
    }
    auto same = [&](const std::map<std::string, float>& s, const std::string& a, const std::string& b) {
      auto ia = s.find(a), ib = s.find(b);
      if (ia != s.end() && ib != s.end() && ia->second != ib->second)
        fail(dir, fmt::format("layer {}: {} and {} must share one scale ({} vs {})", l, a, b, ia->second, ib->second));
    };
    for (const auto* s : {&wscale, &iscale}) {
      same(*s, "self_attn.q_proj", "self_attn.k_proj");
      same(*s, "self_attn.q_proj", "self_attn.v_proj");
      same(*s, "mlp.gate_proj", "mlp.up_proj");
      same(*s, "mlp.shared_mlp.gate_proj", "mlp.shared_mlp.up_proj");
      for (int64_t e = 0; e < n_experts; ++e) {
        const std::string p = "mlp.experts." + std::to_string(e) + ".";
        same(*s, p + "gate_proj", p + "up_proj");
      }
    }
    for (int64_t e = 1; e < n_experts; ++e) {
      const std::string p = "mlp.experts." + std::to_string(e) + ".";
      same(iscale, "mlp.experts.0.gate_proj", p + "gate_proj");
      same(iscale, "mlp.experts.0.down_proj", p + "down_proj");
    }
  }
}

}  // namespace angelslim
