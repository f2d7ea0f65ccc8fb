// HunyuanOCR image preprocessing (SPEC 3.8.1): PNG/JPEG decoding to RGB (alpha over white), smart_resize,
// Pillow-compatible BICUBIC resampling, CLIP normalisation and 16x16 patches in raster order.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace angelslim {

// An 8-bit RGB image, row-major, 3 bytes per pixel.
struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;  // [height, width, 3]
};

// Decodes a PNG or JPEG file (8-bit; palette, grey and alpha converted to RGB, alpha composited over white with
// Pillow's integer formula, as transformers' convert_to_rgb does). Throws IoError (unreadable) or FormatError
// (not a decodable image), both naming the file.
RgbImage load_image(const std::filesystem::path& path);
// The largest image decoded (width x height): Pillow's decompression-bomb limit (2 x 89,478,485 pixels), so that
// every image the reference preprocessor opens opens here too; larger ones are a FormatError before decoding.
inline constexpr int64_t kMaxImagePixels = 178'956'970;
// The same from bytes in memory (`origin` names the source in errors); images of more than max_pixels pixels are
// rejected before decoding.
RgbImage decode_image(const uint8_t* data, std::size_t size, const std::string& origin,
                      int64_t max_pixels = kMaxImagePixels);

// Output size (height, width) of smart_resize (SPEC 3.8.1 step 2): multiples of `factor` within
// [min_pixels, max_pixels]. Throws InvalidInput for an aspect ratio above 200 or an empty image.
std::array<int64_t, 2> smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                    int64_t max_pixels);

// Pillow's Image.resize(size, BICUBIC) for RGB: separable (horizontal pass, then vertical), a = -0.5 cubic with
// its support scaled by the downscale factor, 22-bit fixed-point coefficients, 8-bit intermediate, clamped.
RgbImage resize_bicubic(const RgbImage& in, int64_t out_width, int64_t out_height);

// Processor settings (preprocessor_config.json / processor_config.json).
struct ImageProcessorConfig {
  int64_t min_pixels = 262144;  // HunyuanOCR v1.0
  int64_t max_pixels = 4194304;
  int64_t patch_size = 16;
  int64_t merge_size = 2;
  std::array<float, 3> mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std{0.26862954f, 0.26130258f, 0.27577711f};
};
// Reads <dir>/preprocessor_config.json (else processor_config.json; else defaults). Accepts min_pixels/max_pixels
// at the top level or as size.shortest_edge / size.longest_edge.
ImageProcessorConfig load_image_processor_config(const std::filesystem::path& model_dir);

// A preprocessed image: patches [grid_h * grid_w, 3 * patch * patch] fp32, raster order over the patch grid,
// each patch ordered (channel, py, px); image_grid_thw = [1, grid_h, grid_w].
struct ImagePatches {
  int64_t grid_h = 0, grid_w = 0;
  int64_t patch_dim = 0;
  std::vector<float> pixels;
};

// Normalise x = (p/255 - mean)/std in fp32 and cut an already-resized image (sides multiples of the patch size)
// into patches.
ImagePatches patchify(const RgbImage& resized, const ImageProcessorConfig& cfg);
// Resize (smart_resize + bicubic), normalise x = (p/255 - mean)/std in fp32, patchify.
ImagePatches preprocess_image(const RgbImage& img, const ImageProcessorConfig& cfg);
// The resized 8-bit image that preprocess_image normalises (for tests and diagnostics).
RgbImage resize_for_model(const RgbImage& img, const ImageProcessorConfig& cfg);

}  // namespace angelslim
