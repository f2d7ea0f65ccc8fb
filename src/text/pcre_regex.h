// PCRE2 wrapper for the tokenizers' pre-tokenizer regexes (SPEC 1.6): compiled with UTF + UCP and
// JIT when available; finds all non-overlapping matches like Oniguruma's / Rust's find_iter.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace angelslim {

// Rewrites `\s` / `\S` (outside and inside classes) to \p{WSpace} / \P{WSpace}: HF's Oniguruma and
// tiktoken's Rust regex use the Unicode White_Space property, PCRE2's UCP \s lacks U+0085.
std::string rewrite_whitespace_escapes(std::string_view pattern);

class Pcre2Regex {
 public:
  // literal: the pattern is a plain string (HF Split {"String": ...}). Throws FormatError naming
  // `origin` and the offset when the pattern does not compile.
  Pcre2Regex(std::string_view pattern, bool literal, const std::string& origin);
  ~Pcre2Regex();
  Pcre2Regex(Pcre2Regex&& other) noexcept;
  Pcre2Regex& operator=(Pcre2Regex&& other) noexcept;
  Pcre2Regex(const Pcre2Regex&) = delete;
  Pcre2Regex& operator=(const Pcre2Regex&) = delete;

  // Appends the byte ranges [begin, end) of successive non-overlapping, non-empty matches in
  // `text` (which must be valid UTF-8), searching left to right; after an empty match the search
  // resumes one character later. Throws InvalidInput when PCRE2 gives up (match/depth limit).
  void find_all(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& out) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  std::string origin_;
};

}  // namespace angelslim
