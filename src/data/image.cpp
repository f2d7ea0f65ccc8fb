// HunyuanOCR image preprocessing (SPEC 3.8.1). Decoding uses stb_image (Debian libstb-dev); the alpha composite
// and the BICUBIC resampler follow Pillow's integer arithmetic (AlphaComposite.c, Resample.c: separable passes,
// 22-bit coefficients, 8-bit intermediate) so that the resized pixels match the reference preprocessor.
#include "angelslim/data/image.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "angelslim/core/error.h"
#include "angelslim/io/safetensors.h"
#include "data/jpeg_check.h"
#include "data/png_check.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wshadow"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STBI_FAILURE_USERMSG
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace angelslim {

namespace {

// Pillow's alpha composite of `src` (RGBA) over an opaque white destination, per channel (PRECISION_BITS 7,
// division by 255 as ((a >> 8) + a) >> 8).
uint8_t composite_over_white(uint32_t c, uint32_t a) {
  if (a == 0) return 255;
  constexpr uint32_t kBits = 7;
  const uint32_t dst_a = 255, dst_c = 255;
  const uint32_t blend = dst_a * (255 - a);
  const uint32_t outa255 = a * 255 + blend;
  const uint32_t coef1 = a * 255 * 255 * (1u << kBits) / outa255;
  const uint32_t coef2 = 255 * (1u << kBits) - coef1;
  const uint32_t tmp = c * coef1 + dst_c * coef2 + (0x80u << kBits);
  const uint32_t div = ((tmp >> 8) + tmp) >> 8;
  return static_cast<uint8_t>(div >> kBits);
}

}  // namespace

RgbImage decode_image(const uint8_t* data, std::size_t size, const std::string& origin, int64_t max_pixels) {
  ANGELSLIM_CHECK(size > 0 && size < (1ull << 31), FormatError, "{}: not a PNG or JPEG image (size {} bytes)", origin,
                  size);
  int w = 0, h = 0, comp = 0;
  const int len = static_cast<int>(size);
  // stb_image writes out of bounds on a JPEG Huffman table of more than 256 codes (found by fuzz/fuzz_image.cpp).
  if (!jpeg_huffman_tables_ok(data, size))
    throw FormatError(fmt::format("{}: corrupt JPEG: a Huffman table declares more than 256 codes", origin));
  if (!stbi_info_from_memory(data, len, &w, &h, &comp))
    throw FormatError(fmt::format("{}: not a decodable PNG or JPEG image ({})", origin, stbi_failure_reason()));
  if (static_cast<int64_t>(w) * h > max_pixels)
    throw FormatError(fmt::format("{}: image of {} x {} pixels is larger than the limit of {} pixels", origin, w, h,
                                  max_pixels));
  // stb_image allocates an IDAT chunk's declared length before reading it (a 246-byte file asked for 2 GB; found by
  // fuzz/fuzz_image.cpp).
  if (!png_chunks_fit(data, size))
    throw FormatError(fmt::format("{}: corrupt PNG: a chunk is longer than the rest of the file", origin));
  // stb_image copies a zero-length first IDAT chunk from a null buffer (memcpy(NULL, p, 0), undefined behaviour;
  // found by fuzz/fuzz_image.cpp): such chunks carry no data and are dropped first.
  const std::vector<uint8_t> png = png_without_empty_idat(data, size);
  if (!png.empty()) data = png.data();
  const bool alpha = comp == 2 || comp == 4;
  const int want = alpha ? 4 : 3;
  stbi_uc* px = stbi_load_from_memory(data, png.empty() ? len : static_cast<int>(png.size()), &w, &h, &comp, want);
  if (!px) throw FormatError(fmt::format("{}: cannot decode image ({})", origin, stbi_failure_reason()));
  RgbImage img;
  img.width = w;
  img.height = h;
  const std::size_t n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h);
  img.rgb.resize(n * 3);
  if (!alpha) {
    std::copy(px, px + n * 3, img.rgb.begin());
  } else {
    for (std::size_t i = 0; i < n; ++i)
      for (int c = 0; c < 3; ++c) img.rgb[i * 3 + c] = composite_over_white(px[i * 4 + c], px[i * 4 + 3]);
  }
  stbi_image_free(px);
  return img;
}

RgbImage load_image(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw IoError(fmt::format("{}: cannot open image", path.string()));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return decode_image(bytes.data(), bytes.size(), path.string());
}

std::array<int64_t, 2> smart_resize(int64_t h, int64_t w, int64_t f, int64_t min_pixels, int64_t max_pixels) {
  ANGELSLIM_CHECK(h > 0 && w > 0, InvalidInput, "image of size {}x{} is empty", w, h);
  ANGELSLIM_CHECK(static_cast<double>(std::max(h, w)) / static_cast<double>(std::min(h, w)) <= 200.0, InvalidInput,
                  "image of size {}x{}: aspect ratio above 200", w, h);
  const double fd = static_cast<double>(f);
  int64_t hb = static_cast<int64_t>(std::nearbyint(static_cast<double>(h) / fd)) * f;
  int64_t wb = static_cast<int64_t>(std::nearbyint(static_cast<double>(w) / fd)) * f;
  if (hb * wb > max_pixels) {
    const double beta = std::sqrt(static_cast<double>(h) * static_cast<double>(w) / static_cast<double>(max_pixels));
    hb = std::max(f, static_cast<int64_t>(std::floor(static_cast<double>(h) / beta / fd)) * f);
    wb = std::max(f, static_cast<int64_t>(std::floor(static_cast<double>(w) / beta / fd)) * f);
  } else if (hb * wb < min_pixels) {
    const double beta = std::sqrt(static_cast<double>(min_pixels) / (static_cast<double>(h) * static_cast<double>(w)));
    hb = static_cast<int64_t>(std::ceil(static_cast<double>(h) * beta / fd)) * f;
    wb = static_cast<int64_t>(std::ceil(static_cast<double>(w) * beta / fd)) * f;
  }
  return {hb, wb};
}

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's 8-bit resampler

double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Fixed-point coefficients for resampling `in_size` samples to `out_size`: per output sample, the first input
// index and the count, and `ksize` int32 weights.
struct Coeffs {
  int64_t ksize = 0;
  std::vector<int64_t> first, count;
  std::vector<int32_t> k;
};

Coeffs precompute(int64_t in_size, int64_t out_size) {
  constexpr double kSupport = 2.0;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = kSupport * filterscale;
  Coeffs c;
  c.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<std::size_t>(out_size));
  c.count.resize(static_cast<std::size_t>(out_size));
  c.k.assign(static_cast<std::size_t>(out_size * c.ksize), 0);
  std::vector<double> w(static_cast<std::size_t>(c.ksize));
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    // C casts truncate toward zero, as in the reference.
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      const double v = bicubic((static_cast<double>(x + xmin) - center + 0.5) * ss);
      w[static_cast<std::size_t>(x)] = v;
      ww += v;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      double v = w[static_cast<std::size_t>(x)];
      if (ww != 0.0) v /= ww;
      const double s = v * static_cast<double>(1 << kPrecisionBits);
      c.k[static_cast<std::size_t>(xx * c.ksize + x)] = static_cast<int32_t>(v < 0 ? -0.5 + s : 0.5 + s);
    }
    c.first[static_cast<std::size_t>(xx)] = xmin;
    c.count[static_cast<std::size_t>(xx)] = xmax;
  }
  return c;
}

uint8_t clip8(int64_t v) {
  if (v >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

}  // namespace

RgbImage resize_bicubic(const RgbImage& in, int64_t out_w, int64_t out_h) {
  ANGELSLIM_CHECK(out_w > 0 && out_h > 0, InvalidInput, "resize to {}x{}: empty size", out_w, out_h);
  RgbImage cur = in;
  if (out_w != in.width) {
    const Coeffs c = precompute(in.width, out_w);
    RgbImage o;
    o.width = out_w;
    o.height = in.height;
    o.rgb.resize(static_cast<std::size_t>(out_w * in.height * 3));
    for (int64_t y = 0; y < in.height; ++y) {
      const uint8_t* row = cur.rgb.data() + y * in.width * 3;
      for (int64_t xx = 0; xx < out_w; ++xx) {
        const int32_t* k = c.k.data() + xx * c.ksize;
        const int64_t x0 = c.first[static_cast<std::size_t>(xx)], nx = c.count[static_cast<std::size_t>(xx)];
        for (int ch = 0; ch < 3; ++ch) {
          int64_t ss = int64_t{1} << (kPrecisionBits - 1);
          for (int64_t x = 0; x < nx; ++x) ss += static_cast<int64_t>(row[(x0 + x) * 3 + ch]) * k[x];
          o.rgb[static_cast<std::size_t>((y * out_w + xx) * 3 + ch)] = clip8(ss);
        }
      }
    }
    cur = std::move(o);
  }
  if (out_h != in.height) {
    const Coeffs c = precompute(in.height, out_h);
    RgbImage o;
    o.width = cur.width;
    o.height = out_h;
    o.rgb.resize(static_cast<std::size_t>(cur.width * out_h * 3));
    const int64_t stride = cur.width * 3;
    for (int64_t yy = 0; yy < out_h; ++yy) {
      const int32_t* k = c.k.data() + yy * c.ksize;
      const int64_t y0 = c.first[static_cast<std::size_t>(yy)], ny = c.count[static_cast<std::size_t>(yy)];
      for (int64_t i = 0; i < stride; ++i) {
        int64_t ss = int64_t{1} << (kPrecisionBits - 1);
        for (int64_t y = 0; y < ny; ++y)
          ss += static_cast<int64_t>(cur.rgb[static_cast<std::size_t>((y0 + y) * stride + i)]) * k[y];
        o.rgb[static_cast<std::size_t>(yy * stride + i)] = clip8(ss);
      }
    }
    cur = std::move(o);
  }
  return cur;
}

ImageProcessorConfig load_image_processor_config(const std::filesystem::path& dir) {
  ImageProcessorConfig c;
  std::filesystem::path p = dir / "preprocessor_config.json";
  if (!std::filesystem::exists(p)) p = dir / "processor_config.json";
  if (!std::filesystem::exists(p)) return c;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(p));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: not valid JSON: {}", p.string(), e.what()));
  }
  if (j.contains("image_processor") && j["image_processor"].is_object()) j = j["image_processor"];
  auto get_int = [&](const nlohmann::json& o, const char* key, int64_t& dst) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return;
    ANGELSLIM_CHECK(it->is_number_integer() && it->get<int64_t>() > 0, FormatError,
                    "{}: field '{}' must be a positive integer", p.string(), key);
    dst = it->get<int64_t>();
  };
  if (auto it = j.find("size"); it != j.end() && it->is_object()) {
    get_int(*it, "shortest_edge", c.min_pixels);
    get_int(*it, "longest_edge", c.max_pixels);
  }
  get_int(j, "min_pixels", c.min_pixels);
  get_int(j, "max_pixels", c.max_pixels);
  get_int(j, "patch_size", c.patch_size);
  get_int(j, "merge_size", c.merge_size);
  auto get_vec = [&](const char* key, std::array<float, 3>& dst) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    ANGELSLIM_CHECK(it->is_array() && it->size() == 3, FormatError, "{}: field '{}' must be a list of 3 numbers",
                    p.string(), key);
    for (std::size_t i = 0; i < 3; ++i) dst[i] = (*it)[i].get<float>();
  };
  get_vec("image_mean", c.mean);
  get_vec("image_std", c.std);
  ANGELSLIM_CHECK(c.min_pixels <= c.max_pixels, FormatError, "{}: min_pixels {} > max_pixels {}", p.string(),
                  c.min_pixels, c.max_pixels);
  return c;
}

RgbImage resize_for_model(const RgbImage& img, const ImageProcessorConfig& cfg) {
  const auto hw = smart_resize(img.height, img.width, cfg.patch_size * cfg.merge_size, cfg.min_pixels, cfg.max_pixels);
  return resize_bicubic(img, hw[1], hw[0]);
}

ImagePatches preprocess_image(const RgbImage& img, const ImageProcessorConfig& cfg) {
  return patchify(resize_for_model(img, cfg), cfg);
}

ImagePatches patchify(const RgbImage& r, const ImageProcessorConfig& cfg) {
  const int64_t P = cfg.patch_size;
  ANGELSLIM_CHECK(r.width % P == 0 && r.height % P == 0 && r.width > 0 && r.height > 0, InvalidInput,
                  "image of size {}x{} is not a multiple of the patch size {}", r.width, r.height, P);
  ImagePatches out;
  out.grid_h = r.height / P;
  out.grid_w = r.width / P;
  out.patch_dim = 3 * P * P;
  out.pixels.resize(static_cast<std::size_t>(out.grid_h * out.grid_w * out.patch_dim));
  for (int64_t gy = 0; gy < out.grid_h; ++gy)
    for (int64_t gx = 0; gx < out.grid_w; ++gx) {
      float* dst = out.pixels.data() + (gy * out.grid_w + gx) * out.patch_dim;
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t py = 0; py < P; ++py)
          for (int64_t px = 0; px < P; ++px) {
            const uint8_t v = r.rgb[static_cast<std::size_t>(((gy * P + py) * r.width + gx * P + px) * 3 + c)];
            const float x = static_cast<float>(v) / 255.0f;
            dst[(c * P + py) * P + px] =
                (x - cfg.mean[static_cast<std::size_t>(c)]) / cfg.std[static_cast<std::size_t>(c)];
          }
    }
  return out;
}

}  // namespace angelslim
