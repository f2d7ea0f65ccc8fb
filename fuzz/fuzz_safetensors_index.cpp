// Fuzzes the reader of model.safetensors.index.json (the sharded checkpoint's tensor -> shard map).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "angelslim/io/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return angelslim::fuzz::guarded([&] {
    const auto map = angelslim::parse_safetensors_index(
        std::string_view(reinterpret_cast<const char*>(data), size), "model.safetensors.index.json");
    for (const auto& [tensor, file] : map)
      if (file.empty() || file.find('/') != std::string::npos) __builtin_trap();
  });
}
