// See include/angelslim/quant/awq_apply.h.
#include "angelslim/quant/awq_apply.h"

#include <algorithm>

#include "angelslim/quant/awq.h"

namespace angelslim {

namespace {

bool unscaled(const std::vector<float>& s) {
  return s.empty() || std::all_of(s.begin(), s.end(), [](float v) { return v == 1.0f; });
}

}  // namespace

AwqFolded apply_awq_scales(DecoderLayer& L, const ModelConfig& cfg, const AwqLayerScales& sc,
                           const std::function<DType(const std::string&)>& source_dtype,
                           std::map<std::string, std::vector<uint8_t>>& modified) {
  const std::string prefix = "model.layers." + std::to_string(L.index) + ".";
  auto fold_norm = [&](std::vector<float>& norm, const std::string& name, const std::vector<float>& s) {
    const DType dt = source_dtype(name);
    auto f = awq_fold_norm(norm, s, dt);
    norm = f.weight;
    modified[name] = encode_float_dtype(norm, dt);
    return f.s_eff;
  };
  auto scale_cols = [](Linear& lin, const std::vector<float>& s) {
    scale_columns(lin.w, static_cast<int>(lin.n_out), static_cast<int>(lin.n_in), s);
  };
  auto divide_linear_rows = [&](Linear& lin, const std::string& module, const std::vector<float>& s) {
    divide_rows(lin.w, static_cast<int>(lin.n_out), static_cast<int>(lin.n_in), s);
    if (!lin.bias.empty()) {
      for (std::size_t r = 0; r < lin.bias.size(); ++r) lin.bias[r] /= s[r];
      const DType dt = source_dtype(module + ".bias");
      for (auto& b : lin.bias) b = round_to_dtype(b, dt);
      modified[module + ".bias"] = encode_float_dtype(lin.bias, dt);
    }
  };
  AwqFolded out;
  if (!unscaled(sc.attn_in)) {
    out.attn_in = fold_norm(L.input_norm, prefix + "input_layernorm.weight", sc.attn_in);
    for (Linear* lin : {&L.q, &L.k, &L.v}) scale_cols(*lin, out.attn_in);
  }
  if (!unscaled(sc.attn_out)) {
    divide_linear_rows(L.v, LinearId{L.index, LinearKind::kV, -1, false}.full_name(), sc.attn_out);
    scale_cols(L.o, sc.attn_out);
  }
  if (!unscaled(sc.mlp_in)) {
    out.mlp_in = fold_norm(L.post_norm, prefix + "post_attention_layernorm.weight", sc.mlp_in);
    for (const auto& [id, lin] : sc.mlp_in_members) scale_cols(*lin, out.mlp_in);
    if (L.is_moe) {
      const std::string rname = prefix + "mlp.gate.wg.weight";
      const DType dt = source_dtype(rname);
      scale_columns(L.router, static_cast<int>(cfg.n_experts), static_cast<int>(cfg.d_model), out.mlp_in);
      for (auto& v : L.router) v = round_to_dtype(v, dt);
      modified[rname] = encode_float_dtype(L.router, dt);
    }
  }
  for (const auto& g : sc.mlp_out) {
    if (unscaled(g.s)) continue;
    divide_linear_rows(g.mlp->up, g.up_id.full_name(), g.s);
    scale_cols(g.mlp->down, g.s);
  }
  return out;
}

}  // namespace angelslim
