// A pre-pass over PNG bytes for what the bundled stb_image decoder mishandles.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace angelslim {

// The PNG without its zero-length IDAT chunks (they carry no data; stb_image's first IDAT read from an empty one is
// a memcpy from a null pointer). Empty when there is nothing to drop or the data is not a PNG; chunks are walked by
// their length fields up to IEND or the first chunk that does not fit, and the rest is kept as it is.
std::vector<uint8_t> png_without_empty_idat(const uint8_t* data, std::size_t size);

// False when a PNG chunk before IEND declares more data than the file has left: stb_image allocates an IDAT
// chunk's declared length (up to 4 GB) before it reads the data, and fails on any truncated chunk afterwards.
// True for anything that is not a PNG.
bool png_chunks_fit(const uint8_t* data, std::size_t size);

}  // namespace angelslim
