// Python str algorithms for the chat-template interpreter; see jinja_pystr.h. References: CPython
// Objects/unicodeobject.c (split, splitlines, replace, title, capitalize, islower/isupper) and
// Objects/longobject.c / floatobject.c (int(), float() string parsing).
#include "jinja_pystr.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

namespace angelslim::jinja {

const std::string& need_str(const Value& v, const char* what) {
  if (!v.is_str()) throw_eval(fmt::format("{} must be a string, not '{}'", what, type_name(v)));
  return v.str();
}

int64_t need_int(const Value& v, const char* what) {
  if (!v.is_int_like()) throw_eval(fmt::format("{} must be an integer, not '{}'", what, type_name(v)));
  return v.as_int();
}

bool is_cased_upper(char32_t c) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT;
}
bool is_cased_lower(char32_t c) { return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_LL; }
bool is_cased(char32_t c) { return is_cased_upper(c) || is_cased_lower(c); }
bool is_alpha(char32_t c) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}
bool is_numeric(char32_t c) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}
bool is_word(char32_t c) { return c == U'_' || is_alpha(c) || is_numeric(c); }
char32_t cp_upper(char32_t c) { return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c))); }
char32_t cp_lower(char32_t c) { return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))); }
char32_t cp_title(char32_t c) { return static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(c))); }

namespace {
bool is_line_break(char32_t c) {
  return c == U'\n' || c == U'\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}
}  // namespace

// Python str.splitlines(keepends).
std::vector<std::string> py_splitlines(const std::string& s, bool keepends) {
  const std::u32string u = u32(s);
  std::vector<std::string> out;
  std::size_t start = 0, i = 0;
  while (i < u.size()) {
    if (!is_line_break(u[i])) {
      ++i;
      continue;
    }
    std::size_t eol = i + 1;
    if (u[i] == U'\r' && eol < u.size() && u[eol] == U'\n') ++eol;
    out.push_back(utf8_encode(std::u32string_view(u).substr(start, (keepends ? eol : i) - start)));
    start = i = eol;
  }
  if (start < u.size()) out.push_back(utf8_encode(std::u32string_view(u).substr(start)));
  return out;
}

// Python str.split(sep, maxsplit) / rsplit.
ValueList py_split(const std::string& s, const Value& sep, int64_t maxsplit, bool from_right) {
  ValueList out;
  if (sep.is_none() || sep.is_undefined()) {
    std::u32string u = u32(s);
    if (from_right) std::reverse(u.begin(), u.end());
    std::size_t i = 0;
    std::vector<std::u32string> parts;
    while (true) {
      while (i < u.size() && is_py_space(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        std::size_t e = u.size();
        while (e > i && is_py_space(u[e - 1])) --e;
        parts.push_back(u.substr(i, e - i));
        break;
      }
      std::size_t j = i;
      while (j < u.size() && !is_py_space(u[j])) ++j;
      parts.push_back(u.substr(i, j - i));
      i = j;
    }
    if (from_right) {
      std::reverse(parts.begin(), parts.end());
      for (auto& p : parts) std::reverse(p.begin(), p.end());
    }
    for (auto& p : parts) out.push_back(Value::string(utf8_encode(p)));
    return out;
  }
  const std::string& d = need_str(sep, "split() separator");
  if (d.empty()) throw_eval("empty separator");
  std::vector<std::string> parts;
  if (!from_right) {
    std::size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      const std::size_t k = s.find(d, start);
      if (k == std::string::npos) break;
      parts.push_back(s.substr(start, k - start));
      start = k + d.size();
    }
    parts.push_back(s.substr(start));
  } else {
    std::size_t end = s.size();
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      if (end < d.size()) break;
      const std::size_t k = s.rfind(d, end - d.size());
      if (k == std::string::npos) break;
      parts.push_back(s.substr(k + d.size(), end - k - d.size()));
      end = k;
    }
    parts.push_back(s.substr(0, end));
    std::reverse(parts.begin(), parts.end());
  }
  for (auto& p : parts) out.push_back(Value::string(std::move(p)));
  return out;
}

// Python str.replace(old, new, count).
std::string py_replace(const std::string& s, const std::string& old, const std::string& rep, int64_t count) {
  std::string out;
  if (old.empty()) {  // inserts `rep` before every code point and at the end
    const std::u32string u = u32(s);
    int64_t done = 0;
    for (char32_t c : u) {
      if (count < 0 || done < count) {
        out += rep;
        ++done;
      }
      utf8_append(out, c);
    }
    if (count < 0 || done < count) out += rep;
    return out;
  }
  std::size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const std::size_t k = s.find(old, start);
    if (k == std::string::npos) break;
    out.append(s, start, k - start);
    out += rep;
    start = k + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::string py_capitalize(const std::string& s) {
  const std::u32string u = u32(s);
  std::string out;
  for (std::size_t i = 0; i < u.size(); ++i) utf8_append(out, i == 0 ? cp_title(u[i]) : cp_lower(u[i]));
  return out;
}

// Python str.title(): a cased character after an uncased one is title-cased, others lower-cased.
std::string py_title_method(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (char32_t c : u32(s)) {
    if (is_cased(c)) {
      utf8_append(out, prev_cased ? cp_lower(c) : cp_title(c));
      prev_cased = true;
    } else {
      utf8_append(out, c);
      prev_cased = false;
    }
  }
  return out;
}

bool py_islower(const std::string& s) {
  bool any = false;
  for (char32_t c : u32(s)) {
    if (is_cased_upper(c)) return false;
    any = any || is_cased_lower(c);
  }
  return any;
}

bool py_isupper(const std::string& s) {
  bool any = false;
  for (char32_t c : u32(s)) {
    if (is_cased_lower(c)) return false;
    any = any || is_cased_upper(c);
  }
  return any;
}

// Python float(str): surrounding whitespace, underscores between digits, inf/nan spellings.
std::optional<double> parse_py_float(const std::string& s0) {
  std::string s = py_strip(s0, nullptr, true, true);
  std::string clean;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_') {
      if (i == 0 || i + 1 == s.size() || !std::isdigit(static_cast<unsigned char>(s[i - 1])) ||
          !std::isdigit(static_cast<unsigned char>(s[i + 1])))
        return std::nullopt;
      continue;
    }
    clean.push_back(s[i]);
  }
  if (clean.empty()) return std::nullopt;
  std::string lower = py_lower(clean);
  const std::string body = (lower[0] == '+' || lower[0] == '-') ? lower.substr(1) : lower;
  const double sign = lower[0] == '-' ? -1.0 : 1.0;
  if (body == "inf" || body == "infinity") return sign * HUGE_VAL;
  if (body == "nan") return std::nan("");
  for (char c : body)
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == '+' || c == '-'))
      return std::nullopt;
  char* end = nullptr;
  const double d = std::strtod(clean.c_str(), &end);
  if (end != clean.c_str() + clean.size()) return std::nullopt;
  return d;
}

std::optional<int64_t> parse_py_int(const std::string& s0, int base) {
  std::string s = py_strip(s0, nullptr, true, true);
  if (s.empty()) return std::nullopt;
  bool neg = false;
  std::size_t i = 0;
  if (s[0] == '+' || s[0] == '-') {
    neg = s[0] == '-';
    ++i;
  }
  if (i >= s.size()) return std::nullopt;
  int64_t v = 0;
  bool prev_digit = false;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '_') {
      if (!prev_digit || i + 1 == s.size()) return std::nullopt;
      prev_digit = false;
      continue;
    }
    int d = -1;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (std::isalpha(static_cast<unsigned char>(c)))
      d = (c | 0x20) - 'a' + 10;
    if (d < 0 || d >= base) return std::nullopt;
    if (__builtin_mul_overflow(v, base, &v) || __builtin_add_overflow(v, d, &v)) return std::nullopt;
    prev_digit = true;
  }
  return neg ? -v : v;
}

}  // namespace angelslim::jinja
