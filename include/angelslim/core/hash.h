// SHA-256 (FIPS 180-4) for report fingerprints and resume checks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace angelslim {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::string hex_digest();  // finalizes

 private:
  void block(const uint8_t* p);                  // one 64-byte block, portable
  void blocks(const uint8_t* p, std::size_t n);  // n blocks, SHA-NI when available
  uint32_t h_[8];
  uint8_t buf_[64];
  std::size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);
std::string sha256_file(const std::filesystem::path& path);

}  // namespace angelslim
