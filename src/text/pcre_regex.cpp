// PCRE2 wrapper used by the tokenizers' pre-tokenizers (UTF + UCP, JIT when the library has it).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pcre_regex.h"

#include <pcre2.h>

#include "angelslim/core/error.h"

namespace angelslim {
namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof(buf));
  if (n < 0) return fmt::format("PCRE2 error {}", code);
  return std::string(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
}

// Per-thread match data and JIT stack: 32 KiB initial, up to 8 MiB (long runs of one character
// class backtrack through the JIT stack).
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ThreadMatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context != nullptr && stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatchState() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  ANGELSLIM_CHECK(state.data != nullptr && state.context != nullptr, Internal, "PCRE2 allocation failed");
  return state;
}

std::size_t utf8_char_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  return 4;
}

}  // namespace

std::string rewrite_whitespace_escapes(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      if (e == 's') {
        out += "\\p{WSpace}";
      } else if (e == 'S') {
        out += "\\P{WSpace}";
      } else {
        out.push_back(c);
        out.push_back(e);
      }
      ++i;
      continue;
    }
    out.push_back(c);
  }
  return out;
}

Pcre2Regex::Pcre2Regex(std::string_view pattern, bool literal, const std::string& origin) : origin_(origin) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // PCRE2_LITERAL rejects PCRE2_UCP (no classes to interpret).
  const uint32_t options = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP);
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error, &offset, nullptr);
  ANGELSLIM_CHECK(code != nullptr, FormatError, "{}: regex does not compile at offset {}: {} (pattern {})", origin,
                  offset, pcre2_message(error), pattern);
  code_ = code;
  // Without JIT (library built without it) pcre2_match interprets; results are identical.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
}

Pcre2Regex::~Pcre2Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

Pcre2Regex::Pcre2Regex(Pcre2Regex&& other) noexcept : code_(other.code_), origin_(std::move(other.origin_)) {
  other.code_ = nullptr;
}

Pcre2Regex& Pcre2Regex::operator=(Pcre2Regex&& other) noexcept {
  if (this != &other) {
    pcre2_code_free(static_cast<pcre2_code*>(code_));
    code_ = other.code_;
    origin_ = std::move(other.origin_);
    other.code_ = nullptr;
  }
  return *this;
}

void Pcre2Regex::find_all(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& out) const {
  ANGELSLIM_ASSERT(code_ != nullptr);
  ThreadMatchState& state = thread_match_state();
  const auto* code = static_cast<const pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t pos = 0;
  while (pos < text.size()) {
    // The whole text was validated as UTF-8 by the caller, and pos is always on a char boundary.
    const int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, state.data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    ANGELSLIM_CHECK(rc >= 0, InvalidInput, "{}: regex matching failed at byte {}: {}", origin_, pos, pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
    const std::size_t begin = ov[0], end = ov[1];
    ANGELSLIM_ASSERT(begin <= end && end <= text.size() && begin >= pos);
    if (end > begin) {
      out.emplace_back(begin, end);
      pos = end;
    } else {
      if (begin >= text.size()) break;
      pos = begin + utf8_char_len(static_cast<unsigned char>(text[begin]));
    }
  }
}

}  // namespace angelslim
