// Fuzzes the HunyuanOCR image path (SPEC 3.8.1): PNG/JPEG decoding to RGB, then smart_resize + bicubic resize,
// normalisation and patches, with pixel bounds small enough for fast runs.
#include <cstddef>
#include <cstdint>

#include "angelslim/data/image.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return angelslim::fuzz::guarded([&] {
    const auto img = angelslim::decode_image(data, size, "fuzz.png", 1 << 22);  // 4 MP: fast runs
    if (img.width <= 0 || img.height <= 0 ||
        img.rgb.size() != static_cast<std::size_t>(img.width * img.height * 3))
      __builtin_trap();
    angelslim::ImageProcessorConfig cfg;
    cfg.min_pixels = 32 * 32;
    cfg.max_pixels = 32 * 32 * 16;
    const auto patches = angelslim::preprocess_image(img, cfg);
    if (patches.pixels.size() != static_cast<std::size_t>(patches.grid_h * patches.grid_w * patches.patch_dim))
      __builtin_trap();
  });
}
