// A pre-check of JPEG bytes for what the bundled stb_image decoder does not validate itself.
#pragma once
#include <cstddef>
#include <cstdint>

namespace angelslim {

// False when a Huffman table (DHT segment) that stb_image would read declares more than 256 codes: stb_image
// (the 2022-09 snapshot Debian ships) writes past its fixed 257-entry size list for such a table. Segments
// before the first scan are walked as stb_image walks them; after it, every FF C4 marker is checked, since
// entropy-coded data cannot contain one. True for anything that is not a JPEG.
bool jpeg_huffman_tables_ok(const uint8_t* data, std::size_t size);

}  // namespace angelslim
