// Internal helpers shared by the two tokenizers (SPEC 1.6): file reading, UTF-8 checks, Unicode
// normalization (utf8proc), the GPT-2 byte<->unicode alphabet and a leftmost-longest literal matcher.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace angelslim {

// Whole file as bytes; throws IoError naming the path when it cannot be read.
std::string read_tokenizer_file(const std::filesystem::path& path);

// Byte offset of the first byte that does not start a valid UTF-8 sequence (overlong forms,
// surrogates and code points above U+10FFFF are invalid), or nullopt when `s` is valid UTF-8.
std::optional<std::size_t> find_invalid_utf8(std::string_view s);

// Throws InvalidInput("<who>: text is not valid UTF-8 at byte N") when `s` is not valid UTF-8.
void check_utf8(std::string_view s, std::string_view who);

bool is_ascii(std::string_view s);

enum class UnicodeForm { kNfc, kNfkc };

// Unicode normalization of valid UTF-8 text (utf8proc, stable composition). ASCII text is returned as is.
std::string normalize_unicode(std::string_view s, UnicodeForm form);

// Appends the UTF-8 encoding of code point `cp` (< 0x110000) to `out`.
void append_utf8(std::string& out, char32_t cp);

// GPT-2 byte-level alphabet: bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF map to the same code point; the
// other 68 bytes map, in increasing byte order, to U+0100, U+0101, ...
const std::array<char32_t, 256>& gpt2_byte_to_unicode();

// Byte-level string of `bytes` (each byte as the UTF-8 of its alphabet code point).
std::string gpt2_encode_bytes(std::string_view bytes);

// Inverse of gpt2_encode_bytes; nullopt when `token` (valid UTF-8) has a char outside the alphabet.
std::optional<std::string> gpt2_decode_token(std::string_view token);

// Finds literal strings (special / added tokens) in text: the leftmost match, and among matches that
// start there the longest (aho-corasick "leftmost longest" semantics).
class LiteralMatcher {
 public:
  struct Match {
    std::size_t start;
    std::size_t length;
    int32_t id;
  };

  LiteralMatcher() = default;
  // Empty strings are ignored. A repeated string keeps the id of its last occurrence.
  explicit LiteralMatcher(const std::vector<std::pair<std::string, int32_t>>& literals);

  bool empty() const { return n_literals_ == 0; }
  // First match starting at or after `from`, or nullopt.
  std::optional<Match> find(std::string_view text, std::size_t from) const;

 private:
  // Per first byte: candidates sorted by decreasing length.
  std::array<std::vector<std::pair<std::string, int32_t>>, 256> by_first_byte_;
  std::size_t n_literals_ = 0;
};

}  // namespace angelslim
