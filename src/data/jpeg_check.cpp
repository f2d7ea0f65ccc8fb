// JPEG pre-check for stb_image (see jpeg_check.h). Marker layout: ITU-T T.81 B.1.1.2 (markers, fill bytes),
// B.2.4.2 (DHT: Lh, then per table Tc/Th, 16 code counts L1..L16, and the sum of the counts symbol values).
#include "data/jpeg_check.h"

#include <cstdint>

namespace angelslim {

namespace {

constexpr uint8_t kDht = 0xC4, kSos = 0xDA, kEoi = 0xD9;

std::size_t be16(const uint8_t* d, std::size_t size, std::size_t at) {
  const std::size_t hi = at < size ? d[at] : 0, lo = at + 1 < size ? d[at + 1] : 0;  // stb reads 0 past the end
  return hi << 8 | lo;
}

// The DHT segment whose length field starts at `at`, read as stb_image reads it (tables until the length is used
// up, even past the segment's end, and bytes past the end of the data read as 0): false when a table that it
// would build has more than 256 codes.
bool dht_ok(const uint8_t* d, std::size_t size, std::size_t at) {
  auto byte = [&](std::size_t i) -> std::size_t { return i < size ? d[i] : 0; };
  int64_t left = static_cast<int64_t>(be16(d, size, at)) - 2;
  std::size_t p = at + 2;
  while (left > 0 && p < size + 17) {
    const std::size_t q = byte(p);
    if ((q >> 4) > 1 || (q & 15) > 3) return true;  // stb_image stops with "bad DHT header"
    std::size_t codes = 0;
    for (std::size_t i = 1; i <= 16; ++i) codes += byte(p + i);
    if (codes > 256) return false;
    left -= static_cast<int64_t>(17 + codes);
    p += 17 + codes;
  }
  return true;
}

}  // namespace

bool jpeg_huffman_tables_ok(const uint8_t* d, std::size_t size) {
  // stb_image takes FF fill bytes before SOI too (its marker reader skips any run of FF).
  std::size_t p = 0;
  while (p < size && d[p] == 0xFF) ++p;
  if (p == 0 || p >= size || d[p] != 0xD8) return true;
  ++p;
  // Up to the first scan: marker segments one after the other (bytes between them skipped, as stb_image does).
  while (p < size) {
    if (d[p] != 0xFF) {
      ++p;
      continue;
    }
    while (p < size && d[p] == 0xFF) ++p;
    if (p >= size) return true;
    const uint8_t m = d[p++];
    if (m == kEoi) return true;
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;  // no length field
    if (m == kDht && !dht_ok(d, size, p)) return false;
    if (m == kSos) break;
    p += be16(d, size, p);
  }
  // After it: every DHT marker wherever it is.
  for (; p + 1 < size; ++p)
    if (d[p] == 0xFF && d[p + 1] == kDht && !dht_ok(d, size, p + 2)) return false;
  return true;
}

}  // namespace angelslim
