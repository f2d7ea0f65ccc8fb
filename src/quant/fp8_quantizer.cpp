// FP8 static/dynamic quantizer (SPEC 4.3, export per SPEC 5.2).
#include "angelslim/quant/fp8_quantizer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>

#include "angelslim/calib/stats.h"
#include "angelslim/core/error.h"
#include "angelslim/core/parallel.h"
#include "angelslim/quant/gptq.h"

namespace angelslim {

using nlohmann::json;
using nlohmann::ordered_json;

Fp8Quantizer::Fp8Quantizer(const RunConfig& rc, const ModelConfig& cfg, std::vector<std::string> ignore_list)
    : cfg_(cfg),
      static_(rc.quant.algo == QuantAlgo::kFp8Static),
      per_channel_(rc.quant.weight == WeightGranularity::kPerChannel),
      save_fp8_(rc.quant.save_name == SaveName::kFp8),
      gptq_rounding_(rc.quant.gptq_rounding && static_),
      damp_percent_(rc.quant.damp_percent),
      ignore_(rc.quant.ignore_layers),
      ignore_list_(std::move(ignore_list)) {}

void Fp8Quantizer::quantize_layer(DecoderLayer& L, CalibActivations* acts, json& report) {
  quantize_layer_with(L, acts, report);
}

void Fp8Quantizer::quantize_layer_with(DecoderLayer& L, CalibBackend* calib, json& report) {
  using Clock = std::chrono::steady_clock;
  auto linears = layer_linears(L);
  std::vector<std::pair<LinearId, Linear*>> todo;
  for (auto& [id, lin] : linears)
    if (!ignore_.matches(id.full_name())) todo.push_back({id, lin});
  auto group_key = [](const LinearId& id) -> std::string {
    switch (id.kind) {
      case LinearKind::kQ:
      case LinearKind::kK:
      case LinearKind::kV: return "qkv";
      case LinearKind::kGate:
      case LinearKind::kUp: {
        LinearId g = id;
        g.kind = LinearKind::kGate;
        return "gateup:" + g.rel_name();
      }
      default: return id.rel_name();
    }
  };
  // The weights alone decide the FP8 weights: they are quantized on host threads while the backend runs the
  // calibration pass. Weight amax per linear, then the shared scale of each fused group (SPEC 4.3.3).
  struct WeightOut {
    Fp8Weight w;
    float err = 0.0f;
  };
  std::vector<WeightOut> wout(todo.size());
  double weights_s = 0.0;
  auto quantize_weights = [&] {
    const auto t0 = Clock::now();
    std::vector<float> wamax(todo.size());
    parallel_for(static_cast<int64_t>(todo.size()), [&](int64_t i) {
      wamax[static_cast<std::size_t>(i)] = abs_max(todo[static_cast<std::size_t>(i)].second->w,
                                                   todo[static_cast<std::size_t>(i)].first.full_name().c_str());
    });
    std::map<std::string, float> group_amax;
    for (std::size_t i = 0; i < todo.size(); ++i) {
      float& g = group_amax[group_key(todo[i].first)];
      g = std::max(g, wamax[i]);
    }
    parallel_for(static_cast<int64_t>(todo.size()), [&](int64_t ii) {
      const auto i = static_cast<std::size_t>(ii);
      const Linear& lin = *todo[i].second;
      const int rows = static_cast<int>(lin.n_out), cols = static_cast<int>(lin.n_in);
      WeightOut& o = wout[i];
      if (per_channel_)
        o.w = quantize_fp8_per_channel(lin.w, rows, cols);
      else
        o.w = quantize_fp8_with_scales(
            lin.w, rows, cols, std::vector<float>{fp8_scale_from_amax(group_amax.at(group_key(todo[i].first)))});
      o.err = fp8_rel_error(lin.w, dequantize_fp8(o.w, rows, cols));
    });
    weights_s = std::chrono::duration<double>(Clock::now() - t0).count();
  };
  // A backend that holds the layer's weights on its device after the pass (CUDA) quantizes them there instead, bit for
  // bit the same (CalibBackend::quantize_fp8_weights); it may decline, and then the host path runs after the pass.
  const bool on_device = calib != nullptr && calib->fp8_weights_on_device();
  auto quantize_weights_on_device = [&] {
    const auto t0 = Clock::now();
    std::vector<LinearId> ids;
    std::vector<int> group;  // per fused group (group_key)
    std::map<std::string, int> group_index;
    for (const auto& [id, lin] : todo) {
      ids.push_back(id);
      group.push_back(group_index.try_emplace(group_key(id), static_cast<int>(group_index.size())).first->second);
    }
    std::vector<Fp8Weight> w;
    std::vector<float> err;
    if (!calib->quantize_fp8_weights(L, ids, group, per_channel_, w, err)) return false;
    for (std::size_t i = 0; i < todo.size(); ++i) wout[i] = WeightOut{std::move(w[i]), err[i]};
    weights_s = std::chrono::duration<double>(Clock::now() - t0).count();
    return true;
  };
  std::future<void> weights;
  if (!on_device) weights = std::async(std::launch::async, quantize_weights);
  LayerStats obs;
  if (static_) {
    ANGELSLIM_ASSERT(calib != nullptr);
    // FP8 calibration propagates unquantized activations (SPEC 4.3.2), so observing and advancing is one pass.
    const auto t0 = Clock::now();
    StatsSpec spec;
    spec.abs_max = true;
    if (gptq_rounding_) spec.hessian = {LinearKind::kQ, LinearKind::kO, LinearKind::kGate, LinearKind::kDown};
    obs = calib->advance_stats(L, ForwardOptions{cfg_.torch_dtype != "float32"}, spec);
    report["calib_s"] = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  if (on_device) {
    const bool done = quantize_weights_on_device();
    if (!done) quantize_weights();
    report["weights_device"] = done ? calib->device_name() : "cpu";
  } else {
    weights.get();
    report["weights_device"] = "cpu";
  }
  report["weights_s"] = weights_s;

  // GPTQ rounding: the scales above stay; each weight is re-rounded column by column with GPTQ's error feedback
  // on H = (2/N) X^T X of its unquantized calibration input (the pass above). A linear no token reached (an
  // expert) keeps its round-to-nearest weight.
  std::vector<json> rounding(todo.size());
  if (gptq_rounding_) {
    const auto t0 = Clock::now();
    std::map<std::string, std::vector<std::size_t>> by_input;  // input group -> todo indices
    for (std::size_t i = 0; i < todo.size(); ++i) by_input[input_group(todo[i].first)].push_back(i);
    for (const auto& [key, members] : by_input) {
      int64_t tokens = 0;
      const std::vector<float> h = obs.take_hessian(todo[members.front()].first, &tokens);
      for (std::size_t i : members) {
        const Linear& lin = *todo[i].second;
        if (h.empty()) {
          rounding[i] = {{"rounding", "rtn"}, {"reason", "no calibration token reached this linear"}};
          continue;
        }
        GptqOptions go;
        go.fp8_scales = wout[i].w.scale;
        go.order = GptqOrder::kDescAct;  // no groups: act order only sets the column order
        go.damp_percent = static_cast<float>(damp_percent_);
        go.name = todo[i].first.full_name();
        GptqResult r = gptq_quantize(lin.w, static_cast<int>(lin.n_out), static_cast<int>(lin.n_in), h, go);
        wout[i].w.data = std::move(r.codes);
        wout[i].err = fp8_rel_error(lin.w, r.w_hat);
        rounding[i] = {{"rounding", r.fallback ? "rtn" : "gptq"}, {"damp", r.damp}, {"gptq_loss", r.loss}};
        if (r.fallback) rounding[i]["reason"] = "every Cholesky factorisation failed";
      }
    }
    report["gptq_s"] = std::chrono::duration<double>(Clock::now() - t0).count();
  }

  // Input scales: experts share one value per layer for gate/up and one for down (vLLM's fused MoE).
  float expert_in_gu = 0.0f, expert_in_down = 0.0f;
  for (auto& [id, lin] : linears) {
    if (id.expert < 0) continue;
    const float a = obs.abs_max_of(id).amax;
    if (id.kind == LinearKind::kDown) expert_in_down = std::max(expert_in_down, a);
    else expert_in_gu = std::max(expert_in_gu, a);
  }
  for (std::size_t i = 0; i < todo.size(); ++i) {
    auto& [id, lin] = todo[i];
    const std::string rel = id.rel_name();
    const auto stat = obs.abs_max_of(id);
    Out o;
    o.rows = lin->n_out;
    o.cols = lin->n_in;
    o.w = std::move(wout[i].w);
    if (!per_channel_ && o.w.scale[0] < 3.0517578125e-05f)
      report["warnings"].push_back(
          fmt::format("{}: weight scale {:.3g} < 2^-15: vLLM's FP16 re-quantization of "
                      "fused shards may not be exact",
                      id.full_name(), o.w.scale[0]));
    float in_amax = stat.amax;
    if (id.expert >= 0) in_amax = id.kind == LinearKind::kDown ? expert_in_down : expert_in_gu;
    if (static_) {
      if (in_amax <= 0.0f) {
        if (id.expert < 0)
          throw Internal(fmt::format("{}: no calibration token reached this linear", id.full_name()));
        in_amax = 1.0f;  // cannot happen: some expert of the layer saw tokens
      }
      o.input_scale = fp8_scale_from_amax(in_amax);
    }
    json rec = {{"name", rel},
                {"tokens", stat.tokens},
                {"method", "fp8"},
                {"err_fro", wout[i].err},
                {"weight_scale", per_channel_ ? json(nullptr) : json(o.w.scale[0])},
                {"input_scale", static_ ? json(o.input_scale) : json(nullptr)},
                {"act_amax", static_ ? json(stat.amax) : json(nullptr)}};
    if (!rounding[i].is_null()) rec.update(rounding[i]);
    report["linears"].push_back(std::move(rec));
    out_[id.full_name()] = std::move(o);
  }
}

void Fp8Quantizer::write_module(const std::string& module, SafetensorsWriter& w) { take_module(module)(w); }

std::function<void(SafetensorsWriter&)> Fp8Quantizer::take_module(const std::string& module) {
  auto it = out_.find(module);
  ANGELSLIM_ASSERT(it != out_.end());
  auto o = std::make_shared<Out>(std::move(it->second));
  out_.erase(it);
  return [o, module, per_channel = per_channel_, input = static_](SafetensorsWriter& w) {
    w.add(module + ".weight", DType::kF8E4M3, {o->rows, o->cols}, o->w.data);
    if (per_channel)
      w.add_f32(module + ".weight_scale", {o->rows, 1}, o->w.scale);
    else
      w.add_f32(module + ".weight_scale", {1}, o->w.scale);
    if (input) w.add_f32(module + ".input_scale", {1}, std::vector<float>{o->input_scale});
  };
}

ordered_json Fp8Quantizer::quantization_config() const {
  if (save_fp8_) {
    ordered_json q;
    q["quant_method"] = "fp8";
    q["activation_scheme"] = static_ ? "static" : "dynamic";
    q["ignored_layers"] = ignore_list_;
    return q;
  }
  const ordered_json weights = {{"num_bits", 8},
                                {"strategy", per_channel_ ? "channel" : "tensor"},
                                {"dynamic", false},
                                {"type", "float"},
                                {"symmetric", true}};
  const ordered_json input = {{"num_bits", 8},
                              {"strategy", "tensor"},
                              {"dynamic", !static_},
                              {"type", "float"},
                              {"symmetric", true}};
  ordered_json group;
  group["weights"] = weights;
  group["input_activations"] = input;
  group["output_activations"] = nullptr;
  group["targets"] = {"Linear"};
  ordered_json q;
  q["quant_method"] = "compressed-tensors";
  q["ignore"] = ignore_list_;
  q["config_groups"] = {{"group_0", group}};
  q["kv_cache_scheme"] = nullptr;
  q["format"] = "naive-quantized";
  q["quantization_status"] = "compressed";
  return q;
}

}  // namespace angelslim
