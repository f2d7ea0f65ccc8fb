// Enumeration of a decoder layer's linears and the default backend dispatch; see
// include/angelslim/quant/layer_quantizer.h.
#include "angelslim/quant/layer_quantizer.h"

#include "angelslim/core/error.h"

namespace angelslim {

void LayerQuantizer::quantize_layer_with(DecoderLayer& layer, CalibBackend* calib, nlohmann::json& report) {
  CalibActivations* acts = calib ? calib->host_activations() : nullptr;
  ANGELSLIM_CHECK(calib == nullptr || acts != nullptr, Unsupported,
                  "this algorithm runs on the CPU only; the {} calibration backend is not supported for it",
                  calib->device_name());
  quantize_layer(layer, acts, report);
}

std::vector<std::pair<LinearId, Linear*>> layer_linears(DecoderLayer& L) {
  std::vector<std::pair<LinearId, Linear*>> out;
  auto add = [&](LinearKind k, Linear* lin, int64_t e, bool shared) { out.push_back({{L.index, k, e, shared}, lin}); };
  add(LinearKind::kQ, &L.q, -1, false);
  add(LinearKind::kK, &L.k, -1, false);
  add(LinearKind::kV, &L.v, -1, false);
  add(LinearKind::kO, &L.o, -1, false);
  auto add_mlp = [&](Mlp& m, int64_t e, bool shared) {
    add(LinearKind::kGate, &m.gate, e, shared);
    add(LinearKind::kUp, &m.up, e, shared);
    add(LinearKind::kDown, &m.down, e, shared);
  };
  if (!L.is_moe) add_mlp(L.mlp, -1, false);
  if (L.is_moe && L.has_shared) add_mlp(L.mlp, -1, true);
  for (std::size_t e = 0; e < L.experts.size(); ++e) add_mlp(L.experts[e], static_cast<int64_t>(e), false);
  return out;
}

}  // namespace angelslim
