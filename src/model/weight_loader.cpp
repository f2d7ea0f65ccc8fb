// Loading (and dequantizing) checkpoint weights to fp32; formats per SPEC 5.2-5.4.
#include "angelslim/model/weight_loader.h"

#include <cstring>

#include "angelslim/core/error.h"
#include "angelslim/quant/pack.h"

namespace angelslim {

using nlohmann::json;

std::string WeightFormat::describe() const {
  switch (kind) {
    case Kind::kNone: return "unquantized";
    case Kind::kFp8:
      return act == ActQuant::kFp8Static ? "fp8 (static activations)" : "fp8 (dynamic activations)";
    case Kind::kGptq: return fmt::format("gptq w{} g{}{}", bits, group_size, desc_act ? " desc_act" : "");
    case Kind::kAwq: return fmt::format("awq w{} g{}", bits, group_size);
  }
  return "?";
}

WeightFormat WeightFormat::from_config(const ModelConfig& cfg) {
  WeightFormat f;
  auto it = cfg.raw.find("quantization_config");
  if (it == cfg.raw.end() || it->is_null()) return f;
  const json& q = *it;
  const std::string method = q.value("quant_method", "");
  if (method == "compressed-tensors") {
    f.kind = Kind::kFp8;
    f.act = ActQuant::kFp8Dynamic;
    const json* groups = q.contains("config_groups") ? &q["config_groups"] : nullptr;
    if (!groups || !groups->is_object() || groups->empty())
      throw Unsupported("config.json: quantization_config.config_groups is missing");
    const json& g = groups->begin().value();
    const json& w = g.value("weights", json::object());
    if (w.value("type", "") != "float" || w.value("num_bits", 0) != 8)
      throw Unsupported("config.json: only FP8 (type float, 8 bits) compressed-tensors weights are supported");
    const json ia = g.value("input_activations", json());
    if (ia.is_null()) f.act = ActQuant::kNone;
    else f.act = ia.value("dynamic", false) ? ActQuant::kFp8Dynamic : ActQuant::kFp8Static;
    f.bits = 8;
  } else if (method == "fp8") {
    f.kind = Kind::kFp8;
    f.act = q.value("activation_scheme", "dynamic") == "static" ? ActQuant::kFp8Static : ActQuant::kFp8Dynamic;
    f.bits = 8;
  } else if (method == "gptq") {
    f.kind = Kind::kGptq;
    f.bits = q.value("bits", 4);
    f.group_size = q.value("group_size", 128);
    f.desc_act = q.value("desc_act", false);
  } else if (method == "awq") {
    f.kind = Kind::kAwq;
    f.bits = q.value("bits", 4);
    f.group_size = q.value("group_size", 128);
  } else {
    throw Unsupported(fmt::format("config.json: quantization_config.quant_method '{}' is not supported", method));
  }
  return f;
}

namespace {
void check_shape(const TensorView& t, std::initializer_list<int64_t> want, const std::string& dir) {
  const std::vector<int64_t> w(want);
  if (t.shape != w) {
    std::string got, exp;
    for (auto d : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
    for (auto d : w) exp += (exp.empty() ? "" : ", ") + std::to_string(d);
    throw FormatError(fmt::format("{}: tensor '{}' has shape [{}], expected [{}]", dir, t.name, got, exp));
  }
}
void check_float(const TensorView& t, const std::string& dir) {
  if (t.dtype != DType::kBF16 && t.dtype != DType::kF16 && t.dtype != DType::kF32)
    throw FormatError(fmt::format("{}: tensor '{}' has dtype {}, expected BF16, F16 or F32", dir, t.name,
                                  dtype_name(t.dtype)));
}
}  // namespace

std::vector<float> load_vector(const TensorStore& store, const std::string& name, int64_t n) {
  const auto& t = store.get(name);
  check_shape(t, {n}, store.dir().string());
  check_float(t, store.dir().string());
  return t.to_f32();
}

std::vector<float> load_matrix(const TensorStore& store, const std::string& name, int64_t rows, int64_t cols) {
  const auto& t = store.get(name);
  check_shape(t, {rows, cols}, store.dir().string());
  check_float(t, store.dir().string());
  return t.to_f32();
}

Linear load_linear(const TensorStore& store, const WeightFormat& fmt, const std::string& prefix, int64_t n_out,
                   int64_t n_in) {
  Linear lin;
  lin.n_out = n_out;
  lin.n_in = n_in;
  const std::string dir = store.dir().string();
  if (store.has(prefix + ".bias")) lin.bias = load_vector(store, prefix + ".bias", n_out);
  const bool fp8_here = fmt.kind == WeightFormat::Kind::kFp8 && store.has(prefix + ".weight") &&
                        store.get(prefix + ".weight").dtype == DType::kF8E4M3;
  const bool int_here = (fmt.kind == WeightFormat::Kind::kGptq || fmt.kind == WeightFormat::Kind::kAwq) &&
                        store.has(prefix + ".qweight");
  if (!fp8_here && !int_here) {
    // Unquantized (source checkpoint, or a linear left out of quantization).
    lin.w = load_matrix(store, prefix + ".weight", n_out, n_in);
    return lin;
  }
  switch (fmt.kind) {
    case WeightFormat::Kind::kFp8: {
      const auto& w = store.get(prefix + ".weight");
      check_shape(w, {n_out, n_in}, dir);
      const auto& ws = store.get(prefix + ".weight_scale");
      const auto scale = ws.to_f32();
      lin.w = w.to_f32();
      if (scale.size() == 1) {
        for (auto& v : lin.w) v *= scale[0];
      } else if (static_cast<int64_t>(scale.size()) == n_out) {
        for (int64_t o = 0; o < n_out; ++o)
          for (int64_t i = 0; i < n_in; ++i) lin.w[o * n_in + i] *= scale[o];
      } else {
        throw FormatError(fmt::format("{}: tensor '{}' has {} values, expected 1 or {}", dir, ws.name, scale.size(),
                                      n_out));
      }
      lin.act = fmt.act;
      if (fmt.act == ActQuant::kFp8Static) {
        const auto is = store.get(prefix + ".input_scale").to_f32();
        if (is.size() != 1 || !(is[0] > 0.0f))
          throw FormatError(fmt::format("{}: '{}.input_scale' must hold one positive value", dir, prefix));
        lin.input_scale = is[0];
      }
      return lin;
    }
    case WeightFormat::Kind::kGptq:
    case WeightFormat::Kind::kAwq: {
      // Both layouts dequantize as W[n, k] = (q[k, n] - Z[g(k), n]) * S[g(k), n] (SPEC 5.3.2, 5.4).
      const bool awq = fmt.kind == WeightFormat::Kind::kAwq;
      const int bits = fmt.bits;
      const int N = static_cast<int>(n_out), K = static_cast<int>(n_in);
      const auto& qw = store.get(prefix + ".qweight");
      const auto& qz = store.get(prefix + ".qzeros");
      const auto& sc = store.get(prefix + ".scales");
      if (qw.dtype != DType::kI32 || qz.dtype != DType::kI32)
        throw FormatError(fmt::format("{}: '{}.qweight' and '.qzeros' must be I32", dir, prefix));
      if (sc.shape.size() != 2 || sc.shape[1] != n_out || sc.shape[0] < 1 || n_in % sc.shape[0] != 0)
        throw FormatError(fmt::format("{}: '{}.scales' must be [groups, {}] with groups dividing {}", dir, prefix,
                                      n_out, n_in));
      const int G = static_cast<int>(sc.shape[0]);
      const int P = 32 / bits;
      auto i32 = [](const TensorView& t) {
        std::vector<int32_t> v(static_cast<std::size_t>(t.numel()));
        std::memcpy(v.data(), t.data, t.nbytes);
        return v;
      };
      std::vector<uint8_t> codes;
      std::vector<int32_t> zeros;
      if (awq) {
        if (bits != 4) throw Unsupported(fmt::format("{}: AWQ checkpoints with {} bits", dir, bits));
        check_shape(qw, {n_in, n_out / 8}, dir);
        check_shape(qz, {G, n_out / 8}, dir);
        codes = unpack_awq_qweight(i32(qw), N, K);
        zeros = unpack_awq_qzeros(i32(qz), N, G);
      } else {
        check_shape(qw, {n_in / P, n_out}, dir);
        check_shape(qz, {G, n_out / P}, dir);
        codes = unpack_gptq_qweight(i32(qw), N, K, bits);
        zeros = unpack_gptq_qzeros(i32(qz), N, G, bits);
      }
      const auto scales = sc.to_f32();  // [G, N]
      std::vector<int32_t> g_idx(static_cast<std::size_t>(K));
      for (int k = 0; k < K; ++k) g_idx[static_cast<std::size_t>(k)] = k / (K / G);
      if (!awq && store.has(prefix + ".g_idx")) {
        const auto& gi = store.get(prefix + ".g_idx");
        check_shape(gi, {n_in}, dir);
        g_idx = i32(gi);
        for (int32_t g : g_idx)
          if (g < 0 || g >= G) throw FormatError(fmt::format("{}: '{}.g_idx' holds group {} of {}", dir, prefix, g, G));
      }
      lin.w.resize(static_cast<std::size_t>(n_out * n_in));
      for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) {
          const int g = g_idx[static_cast<std::size_t>(k)];
          const float s = scales[static_cast<std::size_t>(g) * N + n];
          const int z = zeros[static_cast<std::size_t>(n) * G + g];
          lin.w[static_cast<std::size_t>(n) * K + k] =
              static_cast<float>(codes[static_cast<std::size_t>(n) * K + k] - z) * s;
        }
      return lin;
    }
    default:
      throw Internal("unreachable weight format");
  }
}

}  // namespace angelslim
