// GPTQ layer quantizer: staged calibration, solver calls, fold permutations and export (SPEC 4.4, 5.3).
#include "angelslim/quant/gptq_quantizer.h"

#include <cblas.h>

#include <chrono>
#include <cmath>
#include <set>

#include "angelslim/core/error.h"
#include "angelslim/core/parallel.h"
#include "angelslim/quant/pack.h"

namespace angelslim {

using nlohmann::json;
using nlohmann::ordered_json;

namespace {

// Relative output error on the calibration inputs, from the Hessian: tr(D H D^T) / tr(W H W^T), D = W_hat - W.
double relative_output_error(const std::vector<float>& w, const std::vector<float>& w_hat, int rows, int cols,
                             std::span<const float> h) {
  std::vector<float> d(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) d[i] = w_hat[i] - w[i];
  auto quad = [&](const std::vector<float>& m) {
    std::vector<float> mh(m.size());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, cols, 1.0f, m.data(), cols, h.data(), cols, 0.0f,
                mh.data(), cols);
    double s = 0;
    for (std::size_t i = 0; i < m.size(); ++i) s += double(mh[i]) * m[i];
    return s;
  };
  const double den = quad(w);
  return den > 0 ? std::sqrt(std::max(0.0, quad(d)) / den) : 0.0;
}

void put_i32(SafetensorsWriter& w, const std::string& name, std::vector<int64_t> shape, const std::vector<int32_t>& v) {
  w.add(name, DType::kI32, std::move(shape),
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4));
}

void put_half(SafetensorsWriter& w, const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v,
              bool bf16) {
  std::vector<uint16_t> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = bf16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  w.add(name, bf16 ? DType::kBF16 : DType::kF16, std::move(shape),
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(h.data()), h.size() * 2));
}

}  // namespace

GptqSolver cpu_gptq_solver() {
  return [](std::span<const float> w, int rows, int cols, const Hessian& h, const GptqOptions& o) {
    return gptq_quantize(w, rows, cols, h.host(), o);
  };
}

GptqQuantizer::GptqQuantizer(const RunConfig& rc, const ModelConfig& cfg)
    : cfg_(cfg),
      bits_(rc.quant.bits),
      group_size_(rc.quant.weight == WeightGranularity::kPerChannel ? -1 : rc.quant.group_size),
      sym_(!rc.quant.zero_point),
      actorder_(rc.quant.actorder),
      desc_act_(rc.quant.desc_act),
      dequant_bf16_(rc.quant.dequant_to_bf16),
      awq_layout_(rc.quant.zero_point && !rc.quant.dequant_to_bf16),
      damp_(static_cast<float>(rc.quant.damp_percent)),
      min_token_fraction_(rc.quant.moe_min_token_fraction),
      scale_dtype_(rc.quant.zero_point && rc.quant.awq_output_dtype == AwqOutputDtype::kFloat16 ? ScaleDType::kF16
                                                                                                : ScaleDType::kBF16),
      awq_bf16_(rc.quant.awq_output_dtype == AwqOutputDtype::kBfloat16),
      ignore_(rc.quant.ignore_layers) {}

GptqQuantizer::Solved GptqQuantizer::solve(const Job& job) const {
  const auto t0 = std::chrono::steady_clock::now();
  const Linear* lin = job.lin;
  const int rows = static_cast<int>(lin->n_out), cols = static_cast<int>(lin->n_in);
  Solved s;
  Out& o = s.out;
  o.rows = rows;
  o.cols = cols;
  json& rec = s.rec;
  rec = {{"name", job.id.rel_name()}, {"tokens", job.tokens}};
  if (job.starving || job.h == nullptr || job.h->empty()) {
    // Starving expert (SPEC 4.4.7): round-to-nearest on the same grid, never zeroed, never left in BF16.
    GridSpec spec{sym_ ? GridKind::kGptqSym : GridKind::kGptqAsym, bits_, group_size_, scale_dtype_};
    auto q = rtn_quantize(lin->w, rows, cols, spec);
    o.codes = std::move(q.codes);
    o.scales = std::move(q.scales);
    o.zeros = std::move(q.zeros);
    o.n_groups = q.n_groups;
    o.g_idx.resize(static_cast<std::size_t>(cols));
    for (int c = 0; c < cols; ++c) o.g_idx[static_cast<std::size_t>(c)] = c / q.group_size;
    s.w_hat = std::move(q.dequant);
    rec["method"] = "rtn_starving_expert";
    rec["loss"] = nullptr;
    rec["damp"] = nullptr;
    rec["out_err"] = nullptr;
  } else {
    const Hessian& h = *job.h;
    GptqOptions opt;
    opt.bits = bits_;
    opt.group_size = group_size_;
    opt.sym = sym_;
    opt.order = job.order;
    opt.damp_percent = damp_;
    opt.scale_dtype = scale_dtype_;
    opt.name = job.id.full_name();
    // A device solver keeps W_hat on its device for the backend (commit); a BF16 output needs it on the host.
    opt.w_hat_on_device = device_solver_ && !dequant_bf16_;
    auto r = solver_(lin->w, rows, cols, h, opt);
    rec["method"] = r.fallback ? "cholesky_fallback" : "gptq";
    rec["damp"] = r.damp;
    rec["loss"] = r.loss;
    rec["dead_columns"] = r.n_dead;
    ANGELSLIM_ASSERT(r.out_err >= 0.0 || !r.w_hat_device);
    rec["out_err"] = r.out_err >= 0.0 ? r.out_err : relative_output_error(lin->w, r.w_hat, rows, cols, h.host());
    rec["solver"] = solver_name_;
    o.codes = std::move(r.codes);
    o.scales = std::move(r.scales);
    o.zeros = std::move(r.zeros);
    o.g_idx = std::move(r.g_idx);
    o.n_groups = r.n_groups;
    if (job.order == GptqOrder::kFold && !r.fallback) s.perm = std::move(r.perm);
    s.w_hat = std::move(r.w_hat);
    s.w_hat_device = std::move(r.w_hat_device);
    s.err_fro = r.err_fro;
  }
  // ||W_hat - W||² and ||W||²: per-row sums on a few threads, added in row order (the same for any thread count).
  // W_hat on the device: the solver's own ||W_hat - W|| (FP64 on the device).
  const bool on_device = s.w_hat_device != nullptr;
  std::vector<double> row_num(static_cast<std::size_t>(rows)), row_den(static_cast<std::size_t>(rows));
  parallel_for(
      rows,
      [&](int64_t r) {
        const std::size_t b = static_cast<std::size_t>(r) * cols;
        double n = 0, d = 0;
        for (std::size_t i = b; i < b + static_cast<std::size_t>(cols); ++i) {
          if (!on_device) n += double(s.w_hat[i] - lin->w[i]) * (s.w_hat[i] - lin->w[i]);
          d += double(lin->w[i]) * lin->w[i];
        }
        row_num[static_cast<std::size_t>(r)] = n;
        row_den[static_cast<std::size_t>(r)] = d;
      },
      4);
  double num = on_device ? s.err_fro * s.err_fro : 0.0, den = 0;
  for (int r = 0; r < rows; ++r) {
    num += row_num[static_cast<std::size_t>(r)];
    den += row_den[static_cast<std::size_t>(r)];
  }
  rec["err_fro"] = std::sqrt(num);
  rec["err_rel"] = den > 0 ? std::sqrt(num / den) : 0.0;
  if (dequant_bf16_) o.w_hat = s.w_hat;
  rec["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

void GptqQuantizer::commit(DecoderLayer& layer, const Job& job, Solved&& s, CalibBackend* acts, json& report) {
  // Later stages and the next layer see the quantized weights (SPEC 4.4.6). A W_hat on the device goes to the
  // backend from there; the host copy of the weights is then dropped (nothing reads it again: a stale copy would
  // go unnoticed, an empty one fails loudly).
  if (s.w_hat_device && acts->linear_changed_on_device(layer, job.id, *s.w_hat_device)) {
    std::vector<float>().swap(job.lin->w);
  } else {
    job.lin->w = s.w_hat_device ? s.w_hat_device->to_host() : std::move(s.w_hat);
    acts->linear_changed(layer, job.id);
  }
  s.w_hat_device.reset();
  report["linears"].push_back(std::move(s.rec));
  out_[job.id.full_name()] = std::move(s.out);
  if (!s.perm.empty() && !dequant_bf16_) {
    // Make the down projection's permutation physical: gate/up output rows follow it (SPEC 4.4.5 B).
    // (A dequantized BF16 output keeps every matrix in the original order.)
    for (const LinearKind kind : {LinearKind::kGate, LinearKind::kUp}) {
      LinearId gid = job.id;
      gid.kind = kind;
      Out& g = out_[gid.full_name()];
      const std::span<const int32_t> p(s.perm);
      g.codes = gather_rows<uint8_t>(g.codes, g.rows, g.cols, p);
      g.scales = gather_rows<float>(g.scales, g.rows, g.n_groups, p);
      g.zeros = gather_rows<int32_t>(g.zeros, g.rows, g.n_groups, p);
    }
  }
}

void GptqQuantizer::quantize_layer(DecoderLayer& layer, CalibActivations* acts, json& report) {
  quantize_layer_with(layer, acts, report);
}

void GptqQuantizer::quantize_layer_with(DecoderLayer& layer, CalibBackend* acts, json& report) {
  ANGELSLIM_ASSERT(acts != nullptr);
  const ForwardOptions fopt{cfg_.torch_dtype != "float32"};
  const auto all = layer_linears(layer);
  const int64_t n_layer_tokens = acts->n_tokens();
  const auto threshold =
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil(min_token_fraction_ * static_cast<double>(n_layer_tokens))));
  std::map<int64_t, int64_t> expert_tokens;  // expert -> routed tokens (from the gate/up stage)
  std::set<int64_t> starving;
  json moe_tokens = json::array();
  std::vector<double> calib_s, solve_s;  // per stage: its pass; its solves and commits (wall)
  double commit_s = 0.0;                  // of which committing (weights to the backend, outputs), all stages

  const std::vector<std::set<LinearKind>> stages = {
      {LinearKind::kQ, LinearKind::kK, LinearKind::kV}, {LinearKind::kO}, {LinearKind::kGate, LinearKind::kUp},
      {LinearKind::kDown}};
  const StopAfter stops[] = {StopAfter::kQkvInput, StopAfter::kOInput, StopAfter::kMlpInput, StopAfter::kNone};
  for (std::size_t si = 0; si < stages.size(); ++si) {
    const auto& kinds = stages[si];
    StatsSpec spec;
    spec.hessian = kinds;
    spec.keep_on_device = device_solver_;
    ForwardOptions stage_opt = fopt;
    stage_opt.stop_after = stops[si];
    const auto tc = std::chrono::steady_clock::now();
    LayerStats obs = acts->observe_stats(layer, stage_opt, spec);
    calib_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count());
    // Group this stage's quantized linears by shared input, in forward order.
    std::vector<std::string> keys;
    std::map<std::string, std::vector<std::pair<LinearId, Linear*>>> groups;
    for (const auto& [id, lin] : all) {
      if (!kinds.count(id.kind) || ignore_.matches(id.full_name())) continue;
      const auto key = input_group(id);
      if (!groups.count(key)) keys.push_back(key);
      groups[key].push_back({id, lin});
    }
    // Plan the stage: every quantized linear with its group's Hessian and order.
    std::vector<Hessian> hessians(keys.size());
    std::vector<Job> jobs;
    for (std::size_t ki = 0; ki < keys.size(); ++ki) {
      auto& members = groups[keys[ki]];
      hessians[ki] = obs.take(members.front().first);
      const int64_t tokens = hessians[ki].tokens();
      const LinearId& id0 = members.front().first;
      if (id0.expert >= 0 && id0.kind == LinearKind::kGate) {
        expert_tokens[id0.expert] = tokens;
        if (tokens < threshold) starving.insert(id0.expert);
      }
      const bool starve = id0.expert >= 0 && starving.count(id0.expert);
      GptqOrder order = GptqOrder::kNatural;
      if (desc_act_) order = GptqOrder::kDescAct;
      else if (actorder_) order = id0.kind == LinearKind::kDown ? GptqOrder::kFold : GptqOrder::kActOrderStatic;
      // Fold needs the MLP's gate/up in the output to carry the permutation; otherwise keep static groups.
      LinearId gate_id = id0, up_id = id0;
      gate_id.kind = LinearKind::kGate;
      up_id.kind = LinearKind::kUp;
      if (order == GptqOrder::kFold && (!out_.count(gate_id.full_name()) || !out_.count(up_id.full_name())))
        order = GptqOrder::kActOrderStatic;
      if (!starve && hessians[ki].empty() && id0.expert < 0)
        throw Internal(fmt::format("{}: no calibration token reached this linear", id0.full_name()));
      for (const auto& [id, lin] : members) jobs.push_back(Job{id, lin, &hessians[ki], tokens, starve, order});
    }
    // Solve up to concurrency_ linears at once (when the solver allows it); commit in plan order on this thread
    // while the next ones are solved.
    const auto ts = std::chrono::steady_clock::now();
    ordered_pipeline(
        static_cast<int64_t>(jobs.size()), concurrency_, 2 * static_cast<int64_t>(concurrency_),
        [&](int64_t j) { return solve(jobs[static_cast<std::size_t>(j)]); },
        [&](int64_t j, Solved&& s) {
          const auto tc = std::chrono::steady_clock::now();
          commit(layer, jobs[static_cast<std::size_t>(j)], std::move(s), acts, report);
          commit_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
        });
    solve_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count());
  }
  if (layer.is_moe) {
    for (int64_t e = 0; e < static_cast<int64_t>(layer.experts.size()); ++e)
      moe_tokens.push_back(expert_tokens.count(e) ? expert_tokens[e] : 0);
    report["expert_tokens"] = moe_tokens;
    json st = json::array();
    for (auto e : starving) st.push_back({{"expert", e}, {"tokens", expert_tokens[e]}, {"threshold", threshold}});
    report["starving_experts"] = st;
  }
  const auto ta = std::chrono::steady_clock::now();
  acts->advance_stats(layer, fopt, StatsSpec{});
  calib_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - ta).count());
  report["calib_s"] = calib_s;  // the four stage passes and the propagation pass
  report["solves_at_once"] = concurrency_;
  report["solve_s"] = solve_s;
  report["commit_s"] = commit_s;
}

void GptqQuantizer::write_module(const std::string& module, SafetensorsWriter& w) { take_module(module)(w); }

std::function<void(SafetensorsWriter&)> GptqQuantizer::take_module(const std::string& module) {
  auto it = out_.find(module);
  ANGELSLIM_ASSERT(it != out_.end());
  auto o = std::make_shared<Out>(std::move(it->second));
  out_.erase(it);
  // The packing runs with the write (on the writer's thread when deferred): it reads only `o` and fixed settings.
  return [o, module, bits = bits_, dequant_bf16 = dequant_bf16_, awq_layout = awq_layout_,
          awq_bf16 = awq_bf16_](SafetensorsWriter& w) {
    const int64_t R = o->rows, K = o->cols, G = o->n_groups;
    if (dequant_bf16) {
      put_half(w, module + ".weight", {R, K}, o->w_hat, true);
    } else if (awq_layout) {
      put_i32(w, module + ".qweight", {K, R / 8}, pack_awq_qweight(o->codes, o->rows, o->cols));
      put_i32(w, module + ".qzeros", {G, R / 8}, pack_awq_qzeros(o->zeros, o->rows, o->n_groups));
      put_half(w, module + ".scales", {G, R}, transpose_scales(o->scales, o->rows, o->n_groups), awq_bf16);
    } else {
      const int64_t P = 32 / bits;
      put_i32(w, module + ".qweight", {K / P, R}, pack_gptq_qweight(o->codes, o->rows, o->cols, bits));
      put_i32(w, module + ".qzeros", {G, R / P}, pack_gptq_qzeros(o->zeros, o->rows, o->n_groups, bits));
      put_half(w, module + ".scales", {G, R}, transpose_scales(o->scales, o->rows, o->n_groups), true);
      put_i32(w, module + ".g_idx", {K}, o->g_idx);
    }
  };
}

ordered_json GptqQuantizer::quantization_config() const {
  if (dequant_bf16_) return nullptr;
  if (awq_layout_) {
    ordered_json q;
    q["quant_method"] = "awq";
    q["zero_point"] = true;
    q["group_size"] = group_size_;
    q["bits"] = bits_;
    q["version"] = "gemm";
    q["modules_to_not_convert"] = nullptr;
    return q;
  }
  ordered_json q;
  q["bits"] = bits_;
  q["group_size"] = group_size_;
  q["desc_act"] = desc_act_;
  q["sym"] = true;
  q["static_groups"] = actorder_ && !desc_act_;
  q["true_sequential"] = true;
  q["damp_percent"] = damp_;
  q["lm_head"] = false;
  q["quant_method"] = "gptq";
  q["checkpoint_format"] = "gptq";
  return q;
}

void GptqQuantizer::edit_config(ordered_json& config) const {
  if (awq_layout_) {
    const char* key = config.contains("dtype") && !config.contains("torch_dtype") ? "dtype" : "torch_dtype";
    config[key] = awq_bf16_ ? "bfloat16" : "float16";
  }
}

}  // namespace angelslim
