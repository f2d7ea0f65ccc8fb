// PNG pre-pass for stb_image (see png_check.h). Chunk layout: PNG spec 5.3 (length, type, data, CRC).
#include "data/png_check.h"

#include <cstring>

namespace angelslim {

std::vector<uint8_t> png_without_empty_idat(const uint8_t* data, std::size_t size) {
  static constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size < 8 || std::memcmp(data, kSignature, 8) != 0) return {};
  std::vector<uint8_t> out;
  std::size_t at = 8, kept = 0;  // data[kept, at) is still to be copied
  while (at + 12 <= size) {
    const uint32_t len = static_cast<uint32_t>(data[at]) << 24 | static_cast<uint32_t>(data[at + 1]) << 16 |
                         static_cast<uint32_t>(data[at + 2]) << 8 | data[at + 3];
    if (len > size - at - 12) break;  // does not fit: stb reports the error
    const uint8_t* type = data + at + 4;
    if (len == 0 && std::memcmp(type, "IDAT", 4) == 0) {
      if (out.empty()) out.reserve(size);
      out.insert(out.end(), data + kept, data + at);
      kept = at + 12;
    }
    at += 12 + len;
    if (std::memcmp(type, "IEND", 4) == 0) break;
  }
  if (out.empty() && kept == 0) return {};
  out.insert(out.end(), data + kept, data + size);
  return out;
}

}  // namespace angelslim
