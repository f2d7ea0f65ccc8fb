// PNG pre-pass for stb_image (see png_check.h). Chunk layout: PNG spec 5.3 (length, type, data, CRC).
#include "data/png_check.h"

#include <cstring>

namespace angelslim {

namespace {

constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

bool is_png(const uint8_t* data, std::size_t size) { return size >= 8 && std::memcmp(data, kSignature, 8) == 0; }

uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8 | p[3];
}

}  // namespace

bool png_chunks_fit(const uint8_t* data, std::size_t size) {
  if (!is_png(data, size)) return true;
  std::size_t at = 8;
  while (at + 8 <= size) {
    const uint32_t len = be32(data + at);
    if (len > size - at - 8 || size - at - 8 - len < 4) return false;  // data and CRC
    if (std::memcmp(data + at + 4, "IEND", 4) == 0) return true;
    at += 12 + len;
  }
  return at == size;  // the file ends between chunks (stb reports the missing IEND) or inside a chunk header
}

std::vector<uint8_t> png_without_empty_idat(const uint8_t* data, std::size_t size) {
  if (!is_png(data, size)) return {};
  std::vector<uint8_t> out;
  std::size_t at = 8, kept = 0;  // data[kept, at) is still to be copied
  while (at + 12 <= size) {
    const uint32_t len = be32(data + at);
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
