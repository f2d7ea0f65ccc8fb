// Python str algorithms the chat-template interpreter needs (split, splitlines, replace, title,
// case tests, int()/float() parsing) on UTF-8 strings, plus argument-type helpers for builtins.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "jinja_value.h"

namespace angelslim::jinja {

// Argument checks for builtins; throw EvalError naming `what`.
const std::string& need_str(const Value& v, const char* what);
int64_t need_int(const Value& v, const char* what);

inline std::u32string u32(const std::string& s) { return utf8_decode(s); }

// Unicode character classes (utf8proc categories) as Python's str predicates use them.
bool is_cased_upper(char32_t c);
bool is_cased_lower(char32_t c);
bool is_cased(char32_t c);
bool is_alpha(char32_t c);
bool is_numeric(char32_t c);
bool is_word(char32_t c);  // re's \w
char32_t cp_upper(char32_t c);
char32_t cp_lower(char32_t c);
char32_t cp_title(char32_t c);

std::vector<std::string> py_splitlines(const std::string& s, bool keepends);
// str.split(sep, maxsplit) / str.rsplit; sep None/Undefined splits on whitespace runs.
ValueList py_split(const std::string& s, const Value& sep, int64_t maxsplit, bool from_right);
std::string py_replace(const std::string& s, const std::string& old, const std::string& rep, int64_t count);
std::string py_capitalize(const std::string& s);
std::string py_title_method(const std::string& s);  // str.title() (not Jinja's title filter)
bool py_islower(const std::string& s);
bool py_isupper(const std::string& s);
// Python int(s, base) / float(s); nullopt where Python raises ValueError (or the int exceeds int64).
std::optional<double> parse_py_float(const std::string& s);
std::optional<int64_t> parse_py_int(const std::string& s, int base);

}  // namespace angelslim::jinja
