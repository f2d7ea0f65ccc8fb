// Lexer of the chat-template interpreter; follows jinja2/lexer.py (3.1): root/tag/comment/raw states,
// whitespace control (-, +), trim_blocks, lstrip_blocks and brace balancing inside tags.
#include "jinja_lexer.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>

#include "angelslim/core/error.h"
#include "jinja_value.h"

namespace angelslim::jinja {

void throw_format(const std::string& origin, int line, int col, const std::string& msg) {
  throw FormatError(fmt::format("{}:{}:{}: {}", origin, line, col, msg));
}

namespace {

bool is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ident_char(char c) { return is_ident_start(c) || is_digit(c); }

class Lexer {
 public:
  Lexer(std::string_view source, const std::string& origin, const LexOptions& opt) : origin_(origin), opt_(opt) {
    // Newline normalisation and the dropped trailing newline, as jinja2.lexer.Lexer.tokeniter does.
    src_.reserve(source.size());
    for (std::size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_.push_back('\n');
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_.push_back(source[i]);
      }
    }
    if (!opt_.keep_trailing_newline && !src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (std::size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    const std::size_t n = src_.size();
    std::size_t p = 0;
    while (p < n) {
      std::size_t t = p;
      while (true) {
        t = src_.find('{', t);
        if (t == std::string::npos || t + 1 >= n) {
          t = std::string::npos;
          break;
        }
        const char k = src_[t + 1];
        if (k == '{' || k == '%' || k == '#') break;
        ++t;
      }
      if (t == std::string::npos) {
        emit_data(src_.substr(p), p);
        break;
      }
      const char kind = src_[t + 1];
      std::size_t after = t + 2;
      char sign = 0;
      if (after < n && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];
      std::size_t raw_body = 0;
      const bool raw = kind == '%' && match_raw_begin(after, &raw_body);
      emit_data(strip_text(src_.substr(p, t - p), sign, kind != '{'), p);
      if (raw) {
        line_starting_ = src_[raw_body - 1] == '\n';
        p = lex_raw(raw_body);
      } else if (kind == '#') {
        p = lex_comment(after);
      } else {
        line_starting_ = false;
        push(kind == '%' ? TokKind::kBlockBegin : TokKind::kVarBegin, {}, t);
        p = lex_tag(after, kind == '%');
      }
    }
    push(TokKind::kEof, {}, n);
    return std::move(out_);
  }

 private:
  std::string src_;
  const std::string& origin_;
  LexOptions opt_;
  std::vector<std::size_t> line_starts_;
  std::vector<Token> out_;
  bool line_starting_ = true;  // the previous match ended with "\n" (or nothing was matched yet)

  void position(std::size_t off, int* line, int* col) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    const std::size_t start = *(it - 1);
    *line = static_cast<int>(it - line_starts_.begin());
    *col = static_cast<int>(utf8_length(std::string_view(src_).substr(start, off - start))) + 1;
  }

  [[noreturn]] void fail(std::size_t off, const std::string& msg) const {
    int line = 0, col = 0;
    position(std::min(off, src_.size()), &line, &col);
    throw_format(origin_, line, col, msg);
  }

  void push(TokKind kind, std::string text, std::size_t off) {
    Token tok{kind, std::move(text)};
    position(off, &tok.line, &tok.col);
    out_.push_back(std::move(tok));
  }

  void emit_data(std::string text, std::size_t off) {
    if (!text.empty()) push(TokKind::kData, std::move(text), off);
  }

  bool starts(std::size_t p, std::string_view s) const { return src_.compare(p, s.size(), s) == 0; }

  // Byte length of the Python-whitespace code point at p, 0 if none.
  std::size_t space_len(std::size_t p) const {
    if (p >= src_.size()) return 0;
    const unsigned char c = static_cast<unsigned char>(src_[p]);
    if (c < 0x80) return is_py_space(c) ? 1 : 0;
    utf8proc_int32_t cp = 0;
    const auto len = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(src_.data() + p),
                                      static_cast<utf8proc_ssize_t>(src_.size() - p), &cp);
    return (len > 0 && is_py_space(static_cast<char32_t>(cp))) ? static_cast<std::size_t>(len) : 0;
  }

  std::size_t skip_space(std::size_t p) const {
    while (std::size_t k = space_len(p)) p += k;
    return p;
  }

  // Text before a tag: "-" strips all trailing whitespace; otherwise lstrip_blocks removes the spaces
  // and tabs between the last newline (or a line start) and a block/comment tag.
  std::string strip_text(std::string text, char sign, bool block_or_comment) const {
    if (sign == '-') return py_strip(text, nullptr, false, true);
    if (sign != '+' && opt_.lstrip_blocks && block_or_comment) {
      const std::size_t nl = text.rfind('\n');
      const std::size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting_) && text.find_first_not_of(" \t", l_pos) == std::string::npos) {
        text.resize(l_pos);
      }
    }
    return text;
  }

  // "{%[-+]?\s*raw\s*(-%}\s*|%})": p is just past the sign; *body gets the offset after the tag.
  bool match_raw_begin(std::size_t p, std::size_t* body) const {
    std::size_t q = skip_space(p);
    if (!starts(q, "raw")) return false;
    q = skip_space(q + 3);
    if (starts(q, "-%}")) {
      *body = skip_space(q + 3);
      return true;
    }
    if (starts(q, "%}")) {
      *body = q + 2;
      return true;
    }
    return false;
  }

  std::size_t lex_raw(std::size_t body) {
    std::size_t t = body;
    while (true) {
      t = src_.find("{%", t);
      if (t == std::string::npos) fail(body, "missing end of raw directive");
      std::size_t q = t + 2;
      char sign = 0;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) sign = src_[q++];
      q = skip_space(q);
      if (starts(q, "endraw")) {
        q = skip_space(q + 6);
        std::size_t end = 0;
        if (starts(q, "+%}")) {
          end = q + 3;
        } else if (starts(q, "-%}")) {
          end = skip_space(q + 3);
        } else if (starts(q, "%}")) {
          end = q + 2;
          if (opt_.trim_blocks && end < src_.size() && src_[end] == '\n') ++end;
        }
        if (end) {
          emit_data(strip_text(src_.substr(body, t - body), sign, true), body);
          line_starting_ = src_[end - 1] == '\n';
          return end;
        }
      }
      t += 2;
    }
  }

  std::size_t lex_comment(std::size_t c0) {
    const std::size_t t = src_.find("#}", c0);
    if (t == std::string::npos) fail(c0, "missing end of comment tag");
    std::size_t end = t + 2;
    if (t > c0 && src_[t - 1] == '-') {
      end = skip_space(end);
    } else if (t > c0 && src_[t - 1] == '+') {
      // "+#}" keeps the newline
    } else if (opt_.trim_blocks && end < src_.size() && src_[end] == '\n') {
      ++end;
    }
    line_starting_ = src_[end - 1] == '\n';
    return end;
  }

  std::size_t lex_tag(std::size_t p, bool block) {
    const std::size_t n = src_.size();
    std::string stack;  // expected closing brackets
    while (true) {
      if (stack.empty()) {
        std::size_t end = 0;
        if (block) {
          if (starts(p, "-%}")) {
            end = skip_space(p + 3);
          } else if (starts(p, "+%}")) {
            end = p + 3;
          } else if (starts(p, "%}")) {
            end = p + 2;
            if (opt_.trim_blocks && end < n && src_[end] == '\n') ++end;
          }
        } else if (starts(p, "-}}")) {
          end = skip_space(p + 3);
        } else if (starts(p, "}}")) {
          end = p + 2;
        }
        if (end) {
          push(block ? TokKind::kBlockEnd : TokKind::kVarEnd, {}, p);
          line_starting_ = src_[end - 1] == '\n';
          return end;
        }
      }
      if (p >= n)
        fail(p, block ? "unexpected end of template, expected '%}'" : "unexpected end of template, expected '}}'");
      if (std::size_t k = space_len(p)) {
        p += k;
        continue;
      }
      const char c = src_[p];
      if (is_digit(c)) {
        p = lex_number(p);
      } else if (is_ident_start(c)) {
        std::size_t q = p;
        while (q < n && is_ident_char(src_[q])) ++q;
        push(TokKind::kName, src_.substr(p, q - p), p);
        p = q;
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (std::string_view two : kTwo)
          if (starts(p, two)) op = two;
        if (op.empty()) {
          if (std::string_view("+-/*%~[](){}<>=.:|,;").find(c) == std::string_view::npos) {
            fail(p, fmt::format("unexpected character '{}'", utf8_encode(utf8_decode(src_.substr(p, 4)).substr(0, 1))));
          }
          op = std::string(1, c);
          if (c == '(') stack.push_back(')');
          if (c == '[') stack.push_back(']');
          if (c == '{') stack.push_back('}');
          if (c == ')' || c == ']' || c == '}') {
            if (stack.empty()) fail(p, fmt::format("unexpected '{}'", c));
            if (stack.back() != c) fail(p, fmt::format("unexpected '{}', expected '{}'", c, stack.back()));
            stack.pop_back();
          }
        }
        push(TokKind::kOp, op, p);
        p += op.size();
      }
    }
  }

  std::size_t lex_number(std::size_t p) {
    const std::size_t n = src_.size();
    auto digits = [&](std::size_t q, auto pred) {  // (\d+_)*\d+ style run; returns end
      while (q < n && (pred(src_[q]) || (src_[q] == '_' && q + 1 < n && pred(src_[q + 1])))) ++q;
      return q;
    };
    auto dec = [](char ch) { return is_digit(ch); };
    if (src_[p] == '0' && p + 1 < n && std::string_view("xXoObB").find(src_[p + 1]) != std::string_view::npos) {
      const char r = static_cast<char>(src_[p + 1] | 0x20);
      const int base = r == 'x' ? 16 : (r == 'o' ? 8 : 2);
      auto pred = [base](char ch) {
        if (base == 16) return std::isxdigit(static_cast<unsigned char>(ch)) != 0;
        return ch >= '0' && ch < static_cast<char>('0' + base);
      };
      std::size_t q = p + 2;
      if (q < n && src_[q] == '_') ++q;
      const std::size_t e = digits(q, pred);
      if (e == q) fail(p, "invalid integer literal");
      std::string s = src_.substr(q, e - q);
      s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
      int64_t v = 0;
      const auto r2 = std::from_chars(s.data(), s.data() + s.size(), v, base);
      if (r2.ec != std::errc()) fail(p, "integer literal out of range");
      Token tok{TokKind::kInt, src_.substr(p, e - p), v};
      position(p, &tok.line, &tok.col);
      out_.push_back(std::move(tok));
      return e;
    }
    std::size_t e = digits(p, dec);
    bool is_float = false;
    const bool after_dot = p > 0 && src_[p - 1] == '.';  // "(?<!\.)": foo.0.1 is two lookups
    if (!after_dot) {
      std::size_t q = e;
      if (q + 1 < n && src_[q] == '.' && is_digit(src_[q + 1])) {
        q = digits(q + 1, dec);
        is_float = true;
      }
      if (q < n && (src_[q] == 'e' || src_[q] == 'E')) {
        std::size_t r = q + 1;
        if (r < n && (src_[r] == '+' || src_[r] == '-')) ++r;
        if (r < n && is_digit(src_[r])) {
          q = digits(r, dec);
          is_float = true;
        }
      }
      if (is_float) e = q;
    }
    std::string s = src_.substr(p, e - p);
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    Token tok{is_float ? TokKind::kFloat : TokKind::kInt, src_.substr(p, e - p)};
    if (is_float) {
      tok.float_value = std::strtod(s.c_str(), nullptr);
    } else {
      const auto r = std::from_chars(s.data(), s.data() + s.size(), tok.int_value);
      if (r.ec != std::errc()) fail(p, "integer literal out of range");
    }
    position(p, &tok.line, &tok.col);
    out_.push_back(std::move(tok));
    return e;
  }

  std::size_t lex_string(std::size_t p) {
    const char quote = src_[p];
    std::size_t i = p + 1;
    while (i < src_.size() && src_[i] != quote) i += (src_[i] == '\\') ? 2 : 1;
    if (i >= src_.size()) fail(p, "unterminated string literal");
    push(TokKind::kString, decode_escapes(p + 1, i), p);
    return i + 1;
  }

  // Python's .encode("ascii", "backslashreplace").decode("unicode-escape") of the literal body.
  std::string decode_escapes(std::size_t b, std::size_t e) const {
    std::string out;
    std::size_t i = b;
    auto hex_value = [&](std::size_t at, int count, const char* what) {
      uint32_t v = 0;
      for (int k = 0; k < count; ++k) {
        const std::size_t q = at + static_cast<std::size_t>(k);
        const char h = q < e ? src_[q] : '\0';
        if (!std::isxdigit(static_cast<unsigned char>(h))) fail(at - 2, fmt::format("truncated {} escape", what));
        v = v * 16 +
            static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
      }
      return v;
    };
    auto put_cp = [&](uint32_t v, std::size_t at) {
      if (v > 0x10FFFF) fail(at, "illegal Unicode character in escape");
      if (v >= 0xD800 && v <= 0xDFFF) fail(at, "surrogate code points in string escapes are not supported");
      utf8_append(out, static_cast<char32_t>(v));
    };
    while (i < e) {
      const char c = src_[i];
      if (c != '\\') {
        out.push_back(c);
        ++i;
        continue;
      }
      const char d = src_[i + 1];
      const unsigned char ud = static_cast<unsigned char>(d);
      if (ud >= 0x80) {
        // backslashreplace turned the character into \xhh / \uhhhh / \Uhhhhhhhh after a literal "\".
        utf8proc_int32_t cp = 0;
        const auto len = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(src_.data() + i + 1),
                                          static_cast<utf8proc_ssize_t>(e - i - 1), &cp);
        if (len <= 0) fail(i, "invalid UTF-8 in string literal");
        const auto u = static_cast<uint32_t>(cp);
        out += u <= 0xFF ? fmt::format("\\x{:02x}", u)
                         : (u <= 0xFFFF ? fmt::format("\\u{:04x}", u) : fmt::format("\\U{:08x}", u));
        i += 1 + static_cast<std::size_t>(len);
        continue;
      }
      i += 2;
      switch (d) {
        case '\n':
          break;  // line continuation
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
          put_cp(hex_value(i, 2, "\\xXX"), i - 2);
          i += 2;
          break;
        case 'u':
          put_cp(hex_value(i, 4, "\\uXXXX"), i - 2);
          i += 4;
          break;
        case 'U':
          put_cp(hex_value(i, 8, "\\UXXXXXXXX"), i - 2);
          i += 8;
          break;
        case 'N':
          fail(i - 2, "\\N{...} escapes are not supported");
        default:
          if (d >= '0' && d <= '7') {
            uint32_t v = static_cast<uint32_t>(d - '0');
            for (int k = 0; k < 2 && i < e && src_[i] >= '0' && src_[i] <= '7'; ++k)
              v = v * 8 + static_cast<uint32_t>(src_[i++] - '0');
            put_cp(v, i);
          } else {
            out.push_back('\\');  // unknown escapes are kept as written
            out.push_back(d);
          }
      }
    }
    return out;
  }
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, const std::string& origin, const LexOptions& opt) {
  return Lexer(source, origin, opt).run();
}

}  // namespace angelslim::jinja
