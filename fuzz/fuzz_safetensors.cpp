// Fuzzes the safetensors reader (SPEC 1.2): header length, JSON header, dtypes, shapes, data offsets, tiling.
// Every accepted tensor must lie inside the input and convert to f32 without touching other bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "angelslim/io/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return angelslim::fuzz::guarded([&] {
    const auto content = angelslim::parse_safetensors(std::span<const uint8_t>(data, size), "fuzz.safetensors");
    for (const auto& [name, t] : content.tensors) {
      if (t.data < data || t.data + t.nbytes > data + size) __builtin_trap();
      if (t.numel() * static_cast<int64_t>(angelslim::dtype_size(t.dtype)) != static_cast<int64_t>(t.nbytes))
        __builtin_trap();
      if (t.numel() <= (1 << 16)) {
        try {
          (void)t.to_f32();
        } catch (const angelslim::Unsupported&) {
        }
      }
    }
  });
}
