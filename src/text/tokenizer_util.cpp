// Internal helpers shared by the two tokenizers: file reading, UTF-8 validation, utf8proc
// normalization, the GPT-2 byte<->unicode alphabet and the literal (special token) matcher.
#include "text/tokenizer_util.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>

#include "angelslim/core/error.h"

namespace angelslim {

std::string read_tokenizer_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  ANGELSLIM_CHECK(in.good(), IoError, "{}: cannot open for reading", path.string());
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ANGELSLIM_CHECK(!in.bad(), IoError, "{}: read failed", path.string());
  return data;
}

std::optional<std::size_t> find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::nullopt;
}

void check_utf8(std::string_view s, std::string_view who) {
  const auto bad = find_invalid_utf8(s);
  ANGELSLIM_CHECK(!bad, InvalidInput, "{}: text is not valid UTF-8 at byte {}", who, bad.value_or(0));
}

bool is_ascii(std::string_view s) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

std::string normalize_unicode(std::string_view s, UnicodeForm form) {
  if (is_ascii(s)) return std::string(s);
  int options = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
  if (form == UnicodeForm::kNfkc) options |= UTF8PROC_COMPAT;
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()), &out,
                   static_cast<utf8proc_option_t>(options));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> holder(out, &std::free);
  ANGELSLIM_CHECK(n >= 0, InvalidInput, "unicode normalization failed: {}", utf8proc_errmsg(n));
  return std::string(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const std::array<char32_t, 256>& gpt2_byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

std::string gpt2_encode_bytes(std::string_view bytes) {
  const auto& table = gpt2_byte_to_unicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) append_utf8(out, table[static_cast<unsigned char>(c)]);
  return out;
}

std::optional<std::string> gpt2_decode_token(std::string_view token) {
  // Inverse table: alphabet code points are all below U+0144.
  static const std::array<int16_t, 0x144> inverse = [] {
    std::array<int16_t, 0x144> inv{};
    inv.fill(-1);
    const auto& t = gpt2_byte_to_unicode();
    for (int b = 0; b < 256; ++b) inv[t[static_cast<std::size_t>(b)]] = static_cast<int16_t>(b);
    return inv;
  }();
  std::string out;
  out.reserve(token.size());
  const auto* p = reinterpret_cast<const unsigned char*>(token.data());
  std::size_t i = 0;
  while (i < token.size()) {
    char32_t cp = 0;
    if (p[i] < 0x80) {
      cp = p[i];
      i += 1;
    } else if ((p[i] & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = (static_cast<char32_t>(p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F);
      i += 2;
    } else {
      return std::nullopt;  // 3/4-byte chars are all outside the alphabet (or the text is malformed)
    }
    if (cp >= inverse.size() || inverse[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(inverse[cp]));
  }
  return out;
}

LiteralMatcher::LiteralMatcher(const std::vector<std::pair<std::string, int32_t>>& literals) {
  std::map<std::string, int32_t> unique;
  for (const auto& [text, id] : literals) {
    if (!text.empty()) unique[text] = id;
  }
  for (auto& [text, id] : unique) by_first_byte_[static_cast<unsigned char>(text[0])].emplace_back(text, id);
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
  n_literals_ = unique.size();
}

std::optional<LiteralMatcher::Match> LiteralMatcher::find(std::string_view text, std::size_t from) const {
  if (n_literals_ == 0) return std::nullopt;
  for (std::size_t i = from; i < text.size(); ++i) {
    const auto& list = by_first_byte_[static_cast<unsigned char>(text[i])];
    if (list.empty()) continue;
    const std::size_t left = text.size() - i;
    for (const auto& [lit, id] : list) {
      if (lit.size() <= left && std::memcmp(text.data() + i, lit.data(), lit.size()) == 0) {
        return Match{i, lit.size(), id};
      }
    }
  }
  return std::nullopt;
}

}  // namespace angelslim
