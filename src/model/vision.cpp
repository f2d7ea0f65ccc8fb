// HunyuanOCR vision tower and adapter on the CPU reference ops (SPEC 3.8.2, 3.8.3); see model/vision.h.
#include "angelslim/model/vision.h"

#include <algorithm>
#include <cmath>

#include "angelslim/core/dtype.h"
#include "angelslim/core/error.h"
#include "angelslim/model/weight_loader.h"
#include "angelslim/ops/cpu_ops.h"

namespace angelslim {

using nlohmann::json;

VisionConfig load_vision_config(const ModelConfig& mc, const std::string& origin) {
  const auto it = mc.raw.find("vision_config");
  if (it == mc.raw.end() || !it->is_object())
    throw InvalidInput(fmt::format("{}: missing object 'vision_config'", origin));
  const json& v = *it;
  auto geti = [&](const char* key, int64_t def, bool required) {
    auto f = v.find(key);
    if (f == v.end() || f->is_null()) {
      if (required) throw InvalidInput(fmt::format("{}: missing field 'vision_config.{}'", origin, key));
      return def;
    }
    if (!f->is_number_integer() || f->get<int64_t>() <= 0)
      throw InvalidInput(fmt::format("{}: field 'vision_config.{}' must be a positive integer", origin, key));
    return f->get<int64_t>();
  };
  VisionConfig c;
  c.d_model = geti("hidden_size", 0, true);
  c.d_ff = geti("intermediate_size", 0, true);
  c.n_layers = geti("num_hidden_layers", 0, true);
  c.n_heads = geti("num_attention_heads", 0, true);
  c.patch_size = geti("patch_size", 16, false);
  c.merge_size = geti("spatial_merge_size", 2, false);
  c.max_image_size = geti("max_image_size", 2048, false);
  c.out_d = mc.d_model;
  if (auto f = v.find("rms_norm_eps"); f != v.end() && f->is_number()) c.eps = f->get<float>();
  if (auto f = v.find("layer_norm_eps"); f != v.end() && f->is_number()) c.eps = f->get<float>();
  if (auto f = v.find("out_hidden_size"); f != v.end() && f->is_number_integer() && f->get<int64_t>() != mc.d_model)
    throw InvalidInput(fmt::format("{}: vision_config.out_hidden_size {} differs from the text hidden_size {}", origin,
                                   f->get<int64_t>(), mc.d_model));
  if (auto f = v.find("hidden_act"); f != v.end() && f->is_string() && f->get<std::string>() != "gelu")
    throw Unsupported(fmt::format("{}: vision_config.hidden_act '{}' is not supported; expected 'gelu'", origin,
                                  f->get<std::string>()));
  if (auto f = v.find("interpolate_mode"); f != v.end() && f->is_string() && f->get<std::string>() != "bilinear")
    throw Unsupported(fmt::format("{}: vision_config.interpolate_mode '{}' is not supported; expected 'bilinear'",
                                  origin, f->get<std::string>()));
  if (geti("temporal_patch_size", 1, false) != 1)
    throw Unsupported(fmt::format("{}: vision_config.temporal_patch_size must be 1 (images only)", origin));
  if (c.d_model % c.n_heads != 0)
    throw InvalidInput(fmt::format("{}: vision_config.hidden_size {} is not a multiple of num_attention_heads {}",
                                   origin, c.d_model, c.n_heads));
  if (c.max_image_size % c.patch_size != 0)
    throw InvalidInput(fmt::format("{}: vision_config.max_image_size must be a multiple of patch_size", origin));
  return c;
}

std::string vision_linear_name(const std::string& prefix, int64_t layer, VisionLinearKind kind) {
  const std::string p = prefix + "layers." + std::to_string(layer) + ".";
  switch (kind) {
    case VisionLinearKind::kQ:
      return p + "self_attn.q_proj";
    case VisionLinearKind::kK:
      return p + "self_attn.k_proj";
    case VisionLinearKind::kV:
      return p + "self_attn.v_proj";
    case VisionLinearKind::kO:
      return p + "self_attn.o_proj";
    case VisionLinearKind::kFc1:
      return p + "mlp.dense_h_to_4h";
    case VisionLinearKind::kFc2:
      return p + "mlp.dense_4h_to_h";
  }
  return p;
}

std::string vision_prefix(const TensorStore& store) {
  for (const char* p : {"vit.", "vit.vit."})
    if (store.has(std::string(p) + "embeddings.patch_embedding.weight")) return p;
  if (store.has("model.vision_tower.embeddings.patch_embedding.weight"))
    throw Unsupported(
        fmt::format("{}: transformers-5.x tensor names (model.vision_tower.*, model.language_model.*) "
                    "are not supported yet; use the released checkpoint's names (vit.*, model.*)",
                    store.dir().string()));
  throw FormatError(
      fmt::format("{}: no vision tower (missing 'vit.embeddings.patch_embedding.weight')", store.dir().string()));
}

bool is_vision_tensor(const std::string& name, const std::string& prefix) { return name.rfind(prefix, 0) == 0; }

namespace {

std::vector<float> load_any(const TensorStore& store, const std::string& name, std::vector<int64_t> shape) {
  const auto& t = store.get(name);
  if (t.shape != shape) {
    std::string got, exp;
    for (auto d : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
    for (auto d : shape) exp += (exp.empty() ? "" : ", ") + std::to_string(d);
    throw FormatError(
        fmt::format("{}: tensor '{}' has shape [{}], expected [{}]", store.dir().string(), name, got, exp));
  }
  if (t.dtype != DType::kBF16 && t.dtype != DType::kF16 && t.dtype != DType::kF32)
    throw FormatError(fmt::format("{}: tensor '{}' has dtype {}, expected BF16, F16 or F32", store.dir().string(), name,
                                  dtype_name(t.dtype)));
  return t.to_f32();
}

}  // namespace

VisionTower load_vision_tower(const TensorStore& store, const ModelConfig& mc) {
  VisionTower t;
  t.cfg = load_vision_config(mc, store.dir().string() + "/config.json");
  t.prefix = vision_prefix(store);
  const auto& c = t.cfg;
  const int64_t Hv = c.d_model, P = c.patch_size, m = c.merge_size, E = c.pos_edge(), H = c.out_d;
  const std::string& p = t.prefix;
  const WeightFormat fmt = WeightFormat::from_config(mc);
  t.patch_w = load_any(store, p + "embeddings.patch_embedding.weight", {Hv, 3, P, P});
  t.patch_b = load_any(store, p + "embeddings.patch_embedding.bias", {Hv});
  t.pos = load_any(store, p + "embeddings.position_embedding.weight", {E * E + 1, Hv});
  for (int64_t n = 0; n < c.n_layers; ++n) {
    VisionLayer L;
    const std::string lp = p + "layers." + std::to_string(n) + ".";
    L.ln1_w = load_any(store, lp + "input_layernorm.weight", {Hv});
    L.ln1_b = load_any(store, lp + "input_layernorm.bias", {Hv});
    L.ln2_w = load_any(store, lp + "post_attention_layernorm.weight", {Hv});
    L.ln2_b = load_any(store, lp + "post_attention_layernorm.bias", {Hv});
    L.q = load_linear(store, fmt, lp + "self_attn.q_proj", Hv, Hv);
    L.k = load_linear(store, fmt, lp + "self_attn.k_proj", Hv, Hv);
    L.v = load_linear(store, fmt, lp + "self_attn.v_proj", Hv, Hv);
    L.o = load_linear(store, fmt, lp + "self_attn.o_proj", Hv, Hv);
    L.fc1 = load_linear(store, fmt, lp + "mlp.dense_h_to_4h", c.d_ff, Hv);
    L.fc2 = load_linear(store, fmt, lp + "mlp.dense_4h_to_h", Hv, c.d_ff);
    t.layers.push_back(std::move(L));
  }
  const std::string ap = p + "perceive.";
  t.before_rms = load_any(store, ap + "before_rms.weight", {Hv});
  t.conv0_w = load_any(store, ap + "proj.0.weight", {2 * Hv, Hv, m, m});
  t.conv0_b = load_any(store, ap + "proj.0.bias", {2 * Hv});
  t.conv2_w = load_any(store, ap + "proj.2.weight", {4 * Hv, 2 * Hv, 1, 1});
  t.conv2_b = load_any(store, ap + "proj.2.bias", {4 * Hv});
  t.mlp = load_linear(store, fmt, ap + "mlp", H, 4 * Hv);
  t.newline = load_any(store, ap + "image_newline", {4 * Hv});
  t.begin = load_any(store, ap + "image_begin", {H});
  t.end = load_any(store, ap + "image_end", {H});
  t.after_rms = load_any(store, ap + "after_rms.weight", {H});
  return t;
}

int64_t n_image_tokens(int64_t gh, int64_t gw, int64_t m) { return (gh / m) * (gw / m + 1) + 2; }

namespace {

void round_if(std::vector<float>& v, bool rb) {
  if (rb) cpu::round_bf16_inplace(v.data(), static_cast<int64_t>(v.size()));
}

// LayerNorm over rows of width n (fp32 statistics; output rounded once in BF16 mode).
void layer_norm(const float* x, int64_t rows, int64_t n, const float* w, const float* b, float eps, float* y, bool rb) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float mean = 0.0f;
    for (int64_t i = 0; i < n; ++i) mean += xr[i];
    mean /= static_cast<float>(n);
    float var = 0.0f;
    for (int64_t i = 0; i < n; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= static_cast<float>(n);
    const float inv = 1.0f / std::sqrt(var + eps);
    for (int64_t i = 0; i < n; ++i) {
      const float v = (xr[i] - mean) * inv * w[i] + b[i];
      yr[i] = rb ? round_bf16(v) : v;
    }
  }
}

float gelu_erf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

// A linear with its runtime activation quantization (FP8 ViT linears written with quant_vit).
void apply(const Linear& lin, const float* x, int64_t n, float* y, bool rb) {
  std::vector<float> scratch;
  apply_linear(lin, x, n, y, rb, scratch);
}

// Position table resized to (gh, gw): bilinear, align_corners false, source scale E/(g+0.1) (SPEC 3.8.2).
std::vector<float> resized_positions(const VisionTower& t, int64_t gh, int64_t gw, bool rb) {
  const int64_t E = t.cfg.pos_edge(), Hv = t.cfg.d_model;
  struct Tap {
    int64_t i0, i1;
    float l;
  };
  auto taps = [&](int64_t g) {
    std::vector<Tap> out;
    const double scale = static_cast<double>(E) / (static_cast<double>(g) + 0.1);
    for (int64_t d = 0; d < g; ++d) {
      const double src = std::max(0.0, (static_cast<double>(d) + 0.5) * scale - 0.5);
      const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(src)), E - 1);
      const int64_t i1 = std::min<int64_t>(i0 + 1, E - 1);
      out.push_back({i0, i1, static_cast<float>(src - static_cast<double>(i0))});
    }
    return out;
  };
  const auto ty = taps(gh), tx = taps(gw);
  const float* P = t.pos.data() + Hv;  // skip the CLS row
  std::vector<float> out(static_cast<std::size_t>(gh * gw * Hv));
  for (int64_t y = 0; y < gh; ++y)
    for (int64_t x = 0; x < gw; ++x) {
      const Tap& a = ty[static_cast<std::size_t>(y)];
      const Tap& b = tx[static_cast<std::size_t>(x)];
      const float* p00 = P + (a.i0 * E + b.i0) * Hv;
      const float* p01 = P + (a.i0 * E + b.i1) * Hv;
      const float* p10 = P + (a.i1 * E + b.i0) * Hv;
      const float* p11 = P + (a.i1 * E + b.i1) * Hv;
      float* o = out.data() + (y * gw + x) * Hv;
      for (int64_t c = 0; c < Hv; ++c)
        o[c] = (1.0f - a.l) * ((1.0f - b.l) * p00[c] + b.l * p01[c]) + a.l * ((1.0f - b.l) * p10[c] + b.l * p11[c]);
    }
  round_if(out, rb);
  return out;
}

// Bidirectional multi-head attention over one image: q, k, v [n, d] -> out [n, d].
void full_attention(const float* q, const float* k, const float* v, int64_t n, int64_t n_heads, int64_t hd, float* out,
                    bool rb) {
  const int64_t d = n_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> qh(static_cast<std::size_t>(n * hd)), kh(qh.size()), vt(qh.size()),
      s(static_cast<std::size_t>(n * n)), oh(qh.size());
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hd; ++j) {
        qh[static_cast<std::size_t>(i * hd + j)] = q[i * d + h * hd + j];
        kh[static_cast<std::size_t>(i * hd + j)] = k[i * d + h * hd + j];
        vt[static_cast<std::size_t>(j * n + i)] = v[i * d + h * hd + j];
      }
    cpu::linear(qh.data(), n, hd, kh.data(), n, nullptr, s.data());
    for (int64_t i = 0; i < n; ++i) {
      float* row = s.data() + i * n;
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) mx = std::max(mx, row[j] * scale);
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        row[j] = std::exp(row[j] * scale - mx);
        sum += row[j];
      }
      for (int64_t j = 0; j < n; ++j) row[j] = rb ? round_bf16(row[j] / sum) : row[j] / sum;
    }
    cpu::linear(s.data(), n, n, vt.data(), hd, nullptr, oh.data());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hd; ++j) {
        const float val = oh[static_cast<std::size_t>(i * hd + j)];
        out[i * d + h * hd + j] = rb ? round_bf16(val) : val;
      }
  }
}

}  // namespace

std::vector<float> vit_forward(const VisionTower& t, const ImagePatches& img, const VisionOptions& opt,
                               VisionObserver* obs) {
  const auto& c = t.cfg;
  const bool rb = opt.round_bf16;
  const int64_t Hv = c.d_model, n = img.grid_h * img.grid_w, pd = img.patch_dim;
  ANGELSLIM_CHECK(pd == 3 * c.patch_size * c.patch_size, InvalidInput,
                  "image patches of {} values do not match the vision tower's patch size {}", pd, c.patch_size);
  std::vector<float> x(static_cast<std::size_t>(n * Hv));
  if (rb) {
    std::vector<float> px = img.pixels;
    cpu::round_bf16_inplace(px.data(), static_cast<int64_t>(px.size()));
    cpu::linear(px.data(), n, pd, t.patch_w.data(), Hv, t.patch_b.data(), x.data());
  } else {
    cpu::linear(img.pixels.data(), n, pd, t.patch_w.data(), Hv, t.patch_b.data(), x.data());
  }
  round_if(x, rb);
  const auto pos = resized_positions(t, img.grid_h, img.grid_w, rb);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rb ? round_bf16(x[i] + pos[i]) : x[i] + pos[i];

  std::vector<float> a(x.size()), q(x.size()), k(x.size()), v(x.size()), att(x.size()), o(x.size());
  std::vector<float> f(static_cast<std::size_t>(n * c.d_ff));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const VisionLayer& L = t.layers[static_cast<std::size_t>(l)];
    layer_norm(x.data(), n, Hv, L.ln1_w.data(), L.ln1_b.data(), c.eps, a.data(), rb);
    if (obs) {
      obs->observe(l, VisionLinearKind::kQ, a.data(), n, Hv);
      obs->observe(l, VisionLinearKind::kK, a.data(), n, Hv);
      obs->observe(l, VisionLinearKind::kV, a.data(), n, Hv);
    }
    apply(L.q, a.data(), n, q.data(), rb);
    apply(L.k, a.data(), n, k.data(), rb);
    apply(L.v, a.data(), n, v.data(), rb);
    full_attention(q.data(), k.data(), v.data(), n, c.n_heads, c.head_dim(), att.data(), rb);
    if (obs) obs->observe(l, VisionLinearKind::kO, att.data(), n, Hv);
    apply(L.o, att.data(), n, o.data(), rb);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = rb ? round_bf16(x[i] + o[i]) : x[i] + o[i];
    layer_norm(x.data(), n, Hv, L.ln2_w.data(), L.ln2_b.data(), c.eps, a.data(), rb);
    if (obs) obs->observe(l, VisionLinearKind::kFc1, a.data(), n, Hv);
    apply(L.fc1, a.data(), n, f.data(), rb);
    for (auto& val : f) val = rb ? round_bf16(gelu_erf(val)) : gelu_erf(val);
    if (obs) obs->observe(l, VisionLinearKind::kFc2, f.data(), n, c.d_ff);
    apply(L.fc2, f.data(), n, o.data(), rb);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = rb ? round_bf16(x[i] + o[i]) : x[i] + o[i];
  }
  return x;
}

std::vector<float> adapter_forward(const VisionTower& t, const float* z_in, int64_t gh, int64_t gw,
                                   const VisionOptions& opt) {
  const auto& c = t.cfg;
  const bool rb = opt.round_bf16;
  const int64_t Hv = c.d_model, m = c.merge_size, H = c.out_d;
  ANGELSLIM_CHECK(gh % m == 0 && gw % m == 0, InvalidInput, "image grid {}x{} is not a multiple of the merge size {}",
                  gh, gw, m);
  const int64_t n = gh * gw, oh = gh / m, ow = gw / m;
  std::vector<float> z(static_cast<std::size_t>(n * Hv));
  cpu::rms_norm(z_in, n, Hv, t.before_rms.data(), c.eps, z.data(), rb);
  // Conv2d k=m, s=m: gather each m x m block into a row ordered (channel, ky, kx), then a matmul.
  const int64_t kin = Hv * m * m;
  std::vector<float> cols(static_cast<std::size_t>(oh * ow * kin));
  for (int64_t y = 0; y < oh; ++y)
    for (int64_t x = 0; x < ow; ++x) {
      float* dst = cols.data() + (y * ow + x) * kin;
      for (int64_t ky = 0; ky < m; ++ky)
        for (int64_t kx = 0; kx < m; ++kx) {
          const float* src = z.data() + ((y * m + ky) * gw + (x * m + kx)) * Hv;
          for (int64_t ch = 0; ch < Hv; ++ch) dst[(ch * m + ky) * m + kx] = src[ch];
        }
    }
  std::vector<float> y1(static_cast<std::size_t>(oh * ow * 2 * Hv));
  cpu::linear(cols.data(), oh * ow, kin, t.conv0_w.data(), 2 * Hv, t.conv0_b.data(), y1.data());
  for (auto& v : y1) v = rb ? round_bf16(gelu_erf(rb ? round_bf16(v) : v)) : gelu_erf(v);
  // 1x1 conv, then a newline column at the right of every row: [oh, ow + 1, 4*Hv] in raster order.
  const int64_t c4 = 4 * Hv, wrow = ow + 1;
  std::vector<float> y2(static_cast<std::size_t>(oh * wrow * c4));
  std::vector<float> tmp(static_cast<std::size_t>(ow * c4));
  for (int64_t y = 0; y < oh; ++y) {
    cpu::linear(y1.data() + y * ow * 2 * Hv, ow, 2 * Hv, t.conv2_w.data(), c4, t.conv2_b.data(), tmp.data());
    if (rb) cpu::round_bf16_inplace(tmp.data(), static_cast<int64_t>(tmp.size()));
    std::copy(tmp.begin(), tmp.end(), y2.begin() + y * wrow * c4);
    float* nl = y2.data() + (y * wrow + ow) * c4;
    for (int64_t ch = 0; ch < c4; ++ch)
      nl[ch] = rb ? round_bf16(t.newline[static_cast<std::size_t>(ch)]) : t.newline[static_cast<std::size_t>(ch)];
  }
  const int64_t n_out = oh * wrow + 2;
  std::vector<float> out(static_cast<std::size_t>(n_out * H));
  apply(t.mlp, y2.data(), oh * wrow, out.data() + H, rb);
  std::copy(t.begin.begin(), t.begin.end(), out.begin());
  std::copy(t.end.begin(), t.end.end(), out.begin() + (n_out - 1) * H);
  cpu::rms_norm(out.data(), n_out, H, t.after_rms.data(), c.eps, out.data(), rb);
  return out;
}

std::vector<float> encode_image(const VisionTower& t, const ImagePatches& img, const VisionOptions& opt,
                                VisionObserver* observer) {
  const auto z = vit_forward(t, img, opt, observer);
  return adapter_forward(t, z.data(), img.grid_h, img.grid_w, opt);
}

}  // namespace angelslim
