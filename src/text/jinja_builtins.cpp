// Builtins of the chat-template interpreter; behaviour follows jinja2/filters.py, jinja2/tests.py and
// jinja2/sandbox.py (3.1) and transformers' chat-template environment (tojson = json.dumps,
// raise_exception, strftime_now).
#include "jinja_builtins.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

#include "jinja_arith.h"
#include "jinja_parser.h"
#include "jinja_pystr.h"

namespace angelslim::jinja {

namespace {

using FilterFn = Value (*)(const Value&, CallArgs&);
using TestFn = bool (*)(const Value&, CallArgs&);

// Python len().
int64_t py_len(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kStr:
      return static_cast<int64_t>(utf8_length(v.str()));
    case Value::Kind::kList:
      return static_cast<int64_t>(v.list().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.dict().items.size());
    default:
      throw_eval(fmt::format("object of type '{}' has no len()", type_name(v)));
  }
}

Value ignore_case(const Value& v) { return v.is_str() ? Value::string(py_lower(v.str())) : v; }

// jinja2.filters.make_attrgetter: "a.b.0" looks up item by item through get_item.
Value get_attribute_path(const Value& item, const Value& attribute, const Value* dflt = nullptr) {
  std::vector<Value> parts;
  if (attribute.is_str()) {
    std::size_t start = 0;
    const std::string& a = attribute.str();
    while (true) {
      const std::size_t dot = a.find('.', start);
      std::string part = a.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      const bool digits =
          !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
      parts.push_back(digits ? Value::integer(std::stoll(part)) : Value::string(part));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
  } else {
    parts.push_back(attribute);
  }
  Value cur = item;
  for (const Value& p : parts) {
    if (cur.is_undefined()) fail_undefined(cur);
    cur = get_item(cur, p);
    if (dflt && !dflt->is_none() && cur.is_undefined()) cur = *dflt;
  }
  return cur;
}

// ---------------------------------------------------------------------------------------------
// Filters

Value f_abs(const Value& v, CallArgs& a) {
  ArgBinder b("abs", a, {});
  if (v.is_int_like()) {
    if (v.as_int() == INT64_MIN) throw_unsupported("integer overflow");
    return Value::integer(std::llabs(v.as_int()));
  }
  if (v.kind() == Value::Kind::kFloat) return Value::number(std::fabs(v.as_double()));
  throw_eval(fmt::format("bad operand type for abs(): '{}'", type_name(v)));
}

Value f_attr(const Value& v, CallArgs& a) {
  ArgBinder b("attr", a, {{"name", true, {}}});
  const std::string name = to_str(b[0]);
  if (auto r = python_getattr(v, name)) return *r;
  return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_type_repr(v), name));
}

Value f_capitalize(const Value& v, CallArgs& a) {
  ArgBinder b("capitalize", a, {});
  return Value::string(py_capitalize(to_str(v)));
}

Value f_length(const Value& v, CallArgs& a) {
  ArgBinder b("length", a, {});
  return Value::integer(py_len(v));
}

Value f_default(const Value& v, CallArgs& a) {
  ArgBinder b("default", a, {{"default_value", false, Value::string("")}, {"boolean", false, Value::boolean(false)}});
  if (v.is_undefined() || (truthy(b[1]) && !truthy(v))) return b[0];
  return v;
}

Value f_dictsort(const Value& v, CallArgs& a) {
  ArgBinder b("dictsort", a,
              {{"case_sensitive", false, Value::boolean(false)},
               {"by", false, Value::string("key")},
               {"reverse", false, Value::boolean(false)}});
  if (!v.is_dict()) throw_eval("You can only sort by either 'key' or 'value' of a mapping");
  const std::string& by = need_str(b[1], "by");
  if (by != "key" && by != "value") throw_eval("You can only sort by either 'key' or 'value'");
  const std::size_t pos = by == "key" ? 0 : 1;
  const bool cs = truthy(b[0]), rev = truthy(b[2]);
  ValueList items;
  for (const auto& [k, x] : v.dict().items) items.push_back(Value::make_list({k, x}));
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    Value kx = x.list()[pos], ky = y.list()[pos];
    if (!cs) {
      kx = ignore_case(kx);
      ky = ignore_case(ky);
    }
    return rev ? compare(ky, kx) < 0 : compare(kx, ky) < 0;
  });
  return Value::make_list(std::move(items));
}

Value f_escape(const Value& v, CallArgs& a) {
  ArgBinder b("escape", a, {});
  std::string out;
  for (char c : to_str(v)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return Value::string(std::move(out));
}

Value f_first(const Value& v, CallArgs& a) {
  ArgBinder b("first", a, {});
  ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(const Value& v, CallArgs& a) {
  ArgBinder b("last", a, {});
  ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value f_int(const Value& v, CallArgs& a) {
  ArgBinder b("int", a, {{"default", false, Value::integer(0)}, {"base", false, Value::integer(10)}});
  if (v.is_undefined()) fail_undefined(v);
  if (v.is_int_like()) return Value::integer(v.as_int());
  auto from_double = [&](double d) -> Value {
    if (!std::isfinite(d)) throw_eval("cannot convert float infinity or NaN to integer");
    if (std::fabs(d) >= 9.2e18) throw_unsupported("integer overflow");
    return Value::integer(static_cast<int64_t>(d));
  };
  if (v.kind() == Value::Kind::kFloat) return from_double(v.as_double());
  if (v.is_str()) {
    if (auto i = parse_py_int(v.str(), static_cast<int>(need_int(b[1], "base")))) return Value::integer(*i);
    if (auto d = parse_py_float(v.str())) return from_double(*d);
  }
  return b[0];
}

Value f_float(const Value& v, CallArgs& a) {
  ArgBinder b("float", a, {{"default", false, Value::number(0.0)}});
  if (v.is_undefined()) fail_undefined(v);
  if (v.is_number()) return Value::number(v.as_double());
  if (v.is_str())
    if (auto d = parse_py_float(v.str())) return Value::number(*d);
  return b[0];
}

Value f_indent(const Value& v, CallArgs& a) {
  ArgBinder b("indent", a,
              {{"width", false, Value::integer(4)},
               {"first", false, Value::boolean(false)},
               {"blank", false, Value::boolean(false)}});
  const std::string ind =
      b[0].is_str() ? b[0].str()
                    : std::string(static_cast<std::size_t>(std::max<int64_t>(0, need_int(b[0], "width"))), ' ');
  const std::string s = to_str(v) + "\n";
  std::vector<std::string> lines = py_splitlines(s, false);
  std::string rv;
  if (truthy(b[2])) {
    for (std::size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + ind : "") + lines[i];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (std::size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].empty() ? "" : ind + lines[i]);
  }
  if (truthy(b[1])) rv = ind + rv;
  return Value::string(std::move(rv));
}

Value f_items(const Value& v, CallArgs& a) {
  ArgBinder b("items", a, {});
  if (v.is_undefined()) return Value::make_list();
  if (!v.is_dict()) throw_eval("Can only get item pairs from a mapping.");
  ValueList out;
  for (const auto& [k, x] : v.dict().items) out.push_back(Value::make_list({k, x}));
  return Value::make_list(std::move(out));
}

Value f_join(const Value& v, CallArgs& a) {
  ArgBinder b("join", a, {{"d", false, Value::string("")}, {"attribute", false, Value::none()}});
  const std::string sep = to_str(b[0]);
  std::string out;
  bool first = true;
  for (const Value& x : iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += to_str(b[1].is_none() ? x : get_attribute_path(x, b[1]));
  }
  return Value::string(std::move(out));
}

Value f_list(const Value& v, CallArgs& a) {
  ArgBinder b("list", a, {});
  return Value::make_list(iterate(v));
}

Value f_lower(const Value& v, CallArgs& a) {
  ArgBinder b("lower", a, {});
  return Value::string(py_lower(to_str(v)));
}

Value f_upper(const Value& v, CallArgs& a) {
  ArgBinder b("upper", a, {});
  return Value::string(py_upper(to_str(v)));
}

Value f_map(const Value& v, CallArgs& a) {
  ValueList out;
  if (a.pos.empty()) {
    Value attribute, dflt = Value::none();
    bool have_attr = false;
    for (auto& [k, x] : a.kw) {
      if (k == "attribute") {
        attribute = x;
        have_attr = true;
      } else if (k == "default") {
        dflt = x;
      } else {
        throw_eval(fmt::format("Unexpected keyword argument '{}'", k));
      }
    }
    if (!have_attr) throw_eval("map requires a filter argument");
    for (const Value& x : iterate(v)) out.push_back(get_attribute_path(x, attribute, &dflt));
    return Value::make_list(std::move(out));
  }
  const std::string name = need_str(a.pos[0], "map() filter name");
  if (!is_supported_filter(name)) {
    if (is_jinja_filter(name))
      throw_unsupported(fmt::format("the '{}' filter is not supported by this template interpreter", name));
    throw_eval(fmt::format("No filter named '{}'.", name));
  }
  for (const Value& x : iterate(v)) {
    CallArgs sub{ValueList(a.pos.begin() + 1, a.pos.end()), a.kw};
    out.push_back(apply_filter(name, x, sub));
  }
  return Value::make_list(std::move(out));
}

Value min_max(const Value& v, CallArgs& a, bool want_max) {
  ArgBinder b(want_max ? "max" : "min", a,
              {{"case_sensitive", false, Value::boolean(false)}, {"attribute", false, Value::none()}});
  ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto key = [&](const Value& x) {
    Value k = b[1].is_none() ? x : get_attribute_path(x, b[1]);
    return truthy(b[0]) ? k : ignore_case(k);
  };
  std::size_t best = 0;
  Value best_key = key(items[0]);
  for (std::size_t i = 1; i < items.size(); ++i) {
    Value k = key(items[i]);
    if (want_max ? compare(k, best_key) > 0 : compare(k, best_key) < 0) {
      best = i;
      best_key = std::move(k);
    }
  }
  return items[best];
}
Value f_max(const Value& v, CallArgs& a) { return min_max(v, a, true); }
Value f_min(const Value& v, CallArgs& a) { return min_max(v, a, false); }

Value select_impl(const Value& v, CallArgs& a, bool lookup_attr, bool keep_if) {
  std::size_t off = 0;
  Value attr;
  if (lookup_attr) {
    if (a.pos.empty()) throw_eval("Missing parameter for attribute name");
    attr = a.pos[0];
    off = 1;
  }
  std::string test;
  if (a.pos.size() > off) test = need_str(a.pos[off], "test name");
  if (!test.empty() && !is_supported_test(test)) {
    if (is_jinja_test(test))
      throw_unsupported(fmt::format("the '{}' test is not supported by this template interpreter", test));
    throw_eval(fmt::format("No test named '{}'.", test));
  }
  ValueList out;
  for (const Value& x : iterate(v)) {
    const Value target = lookup_attr ? get_attribute_path(x, attr) : x;
    bool r;
    if (test.empty()) {
      r = truthy(target);
    } else {
      CallArgs sub{ValueList(a.pos.begin() + static_cast<std::ptrdiff_t>(off) + 1, a.pos.end()), a.kw};
      r = apply_test(test, target, sub);
    }
    if (r == keep_if) out.push_back(x);
  }
  return Value::make_list(std::move(out));
}
Value f_select(const Value& v, CallArgs& a) { return select_impl(v, a, false, true); }
Value f_reject(const Value& v, CallArgs& a) { return select_impl(v, a, false, false); }
Value f_selectattr(const Value& v, CallArgs& a) { return select_impl(v, a, true, true); }
Value f_rejectattr(const Value& v, CallArgs& a) { return select_impl(v, a, true, false); }

Value f_replace(const Value& v, CallArgs& a) {
  ArgBinder b("replace", a, {{"old", true, {}}, {"new", true, {}}, {"count", false, Value::none()}});
  const int64_t count = b[2].is_none() ? -1 : need_int(b[2], "count");
  return Value::string(py_replace(to_str(v), to_str(b[0]), to_str(b[1]), count));
}

Value f_reverse(const Value& v, CallArgs& a) {
  ArgBinder b("reverse", a, {});
  if (v.is_str()) {
    std::u32string u = u32(v.str());
    std::reverse(u.begin(), u.end());
    return Value::string(utf8_encode(u));
  }
  ValueList items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::make_list(std::move(items));
}

Value f_round(const Value& v, CallArgs& a) {
  ArgBinder b("round", a, {{"precision", false, Value::integer(0)}, {"method", false, Value::string("common")}});
  const int64_t prec = need_int(b[0], "precision");
  const std::string& method = need_str(b[1], "method");
  if (method != "common" && method != "ceil" && method != "floor") throw_eval("method must be common, ceil or floor");
  if (!v.is_number()) throw_eval(fmt::format("round() of '{}' is not supported", type_name(v)));
  if (method == "common" && v.is_int_like() && prec >= 0) return Value::integer(v.as_int());
  const double x = v.as_double();
  if (method != "common") {
    const double scale = std::pow(10.0, static_cast<double>(prec));
    return Value::number((method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale);
  }
  if (!std::isfinite(x)) return Value::number(x);
  if (prec == 0) return Value::number(std::nearbyint(x));  // ties to even, like Python's round()
  if (prec > 0) {
    // printf rounds the exact binary value half-to-even, as Python's correctly rounded round(x, n).
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(std::min<int64_t>(prec, 300)), x);
    return Value::number(std::strtod(buf, nullptr));
  }
  const double scale = std::pow(10.0, static_cast<double>(-prec));
  return Value::number(std::nearbyint(x / scale) * scale);
}

Value f_safe(const Value& v, CallArgs& a) {
  ArgBinder b("safe", a, {});
  return Value::string(to_str(v));
}

Value f_sort(const Value& v, CallArgs& a) {
  ArgBinder b("sort", a,
              {{"reverse", false, Value::boolean(false)},
               {"case_sensitive", false, Value::boolean(false)},
               {"attribute", false, Value::none()}});
  ValueList items = iterate(v);
  std::vector<Value> attrs;
  if (b[2].is_str()) {
    for (const Value& part : py_split(b[2].str(), Value::string(","), -1, false)) attrs.push_back(part);
  } else if (!b[2].is_none()) {
    attrs.push_back(b[2]);
  }
  const bool cs = truthy(b[1]), rev = truthy(b[0]);
  auto key = [&](const Value& x) {
    if (attrs.empty()) return cs ? x : ignore_case(x);
    ValueList k;
    for (const Value& at : attrs) {
      Value part = get_attribute_path(x, at);
      k.push_back(cs ? part : ignore_case(part));
    }
    return attrs.size() == 1 ? k[0] : Value::make_list(std::move(k));
  };
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& x : items) keyed.emplace_back(key(x), std::move(x));
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return rev ? compare(y.first, x.first) < 0 : compare(x.first, y.first) < 0;
  });
  ValueList out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::make_list(std::move(out));
}

Value f_string(const Value& v, CallArgs& a) {
  ArgBinder b("string", a, {});
  return Value::string(to_str(v));
}

Value f_sum(const Value& v, CallArgs& a) {
  ArgBinder b("sum", a, {{"attribute", false, Value::none()}, {"start", false, Value::integer(0)}});
  Value total = b[1];
  for (const Value& x : iterate(v)) total = arith("+", total, b[0].is_none() ? x : get_attribute_path(x, b[0]));
  return total;
}

Value f_title(const Value& v, CallArgs& a) {
  ArgBinder b("title", a, {});
  // Jinja: re.split(r"([-\s({\[<]+)") then item[0].upper() + item[1:].lower() per piece.
  const std::u32string u = u32(to_str(v));
  auto is_sep = [](char32_t c) {
    return c == U'-' || c == U'(' || c == U'{' || c == U'[' || c == U'<' || is_py_space(c);
  };
  std::string out;
  std::size_t i = 0;
  while (i < u.size()) {
    const bool sep = is_sep(u[i]);
    std::size_t j = i;
    while (j < u.size() && is_sep(u[j]) == sep) ++j;
    for (std::size_t k = i; k < j; ++k) utf8_append(out, k == i ? cp_upper(u[k]) : cp_lower(u[k]));
    i = j;
  }
  return Value::string(std::move(out));
}

Value f_tojson(const Value& v, CallArgs& a) {
  ArgBinder b("tojson", a,
              {{"ensure_ascii", false, Value::boolean(false)},
               {"indent", false, Value::none()},
               {"separators", false, Value::none()},
               {"sort_keys", false, Value::boolean(false)}});
  JsonDumpOptions opt;
  opt.ensure_ascii = truthy(b[0]);
  if (b[1].is_str()) {
    opt.indent = 0;
    opt.indent_str = b[1].str();
    if (opt.indent_str.empty()) opt.indent = 0;
  } else if (!b[1].is_none()) {
    opt.indent = static_cast<int>(std::max<int64_t>(0, need_int(b[1], "indent")));
  }
  if (!b[2].is_none()) {
    if (!b[2].is_list() || b[2].list().size() != 2)
      throw_eval("separators must be a (item_separator, key_separator) pair");
    opt.item_sep = need_str(b[2].list()[0], "item separator");
    opt.key_sep = need_str(b[2].list()[1], "key separator");
  }
  opt.sort_keys = truthy(b[3]);
  return Value::string(json_dumps(v, opt));
}

Value f_trim(const Value& v, CallArgs& a) {
  ArgBinder b("trim", a, {{"chars", false, Value::none()}});
  const std::string* chars = b[0].is_none() ? nullptr : &need_str(b[0], "trim() chars");
  return Value::string(py_strip(to_str(v), chars, true, true));
}

Value f_unique(const Value& v, CallArgs& a) {
  ArgBinder b("unique", a, {{"case_sensitive", false, Value::boolean(false)}, {"attribute", false, Value::none()}});
  ValueList out, seen;
  for (const Value& x : iterate(v)) {
    Value k = b[1].is_none() ? x : get_attribute_path(x, b[1]);
    if (!truthy(b[0])) k = ignore_case(k);
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, k); })) continue;
    seen.push_back(std::move(k));
    out.push_back(x);
  }
  return Value::make_list(std::move(out));
}

Value f_wordcount(const Value& v, CallArgs& a) {
  ArgBinder b("wordcount", a, {});
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : u32(to_str(v))) {
    const bool w = is_word(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}

const std::map<std::string, FilterFn>& filters() {
  static const std::map<std::string, FilterFn> k = {
      {"abs", f_abs},           {"attr", f_attr},       {"capitalize", f_capitalize},
      {"count", f_length},      {"d", f_default},       {"default", f_default},
      {"dictsort", f_dictsort}, {"e", f_escape},        {"escape", f_escape},
      {"first", f_first},       {"float", f_float},     {"indent", f_indent},
      {"int", f_int},           {"items", f_items},     {"join", f_join},
      {"last", f_last},         {"length", f_length},   {"list", f_list},
      {"lower", f_lower},       {"map", f_map},         {"max", f_max},
      {"min", f_min},           {"reject", f_reject},   {"rejectattr", f_rejectattr},
      {"replace", f_replace},   {"reverse", f_reverse}, {"round", f_round},
      {"safe", f_safe},         {"select", f_select},   {"selectattr", f_selectattr},
      {"sort", f_sort},         {"string", f_string},   {"sum", f_sum},
      {"title", f_title},       {"tojson", f_tojson},   {"trim", f_trim},
      {"unique", f_unique},     {"upper", f_upper},     {"wordcount", f_wordcount},
  };
  return k;
}

// ---------------------------------------------------------------------------------------------
// Tests

bool t_defined(const Value& v, CallArgs&) { return !v.is_undefined(); }
bool t_undefined(const Value& v, CallArgs&) { return v.is_undefined(); }
bool t_none(const Value& v, CallArgs&) { return v.is_none(); }
bool t_boolean(const Value& v, CallArgs&) { return v.kind() == Value::Kind::kBool; }
bool t_false(const Value& v, CallArgs&) { return v.kind() == Value::Kind::kBool && !v.as_bool(); }
bool t_true(const Value& v, CallArgs&) { return v.kind() == Value::Kind::kBool && v.as_bool(); }
bool t_integer(const Value& v, CallArgs&) { return v.kind() == Value::Kind::kInt; }
bool t_float(const Value& v, CallArgs&) { return v.kind() == Value::Kind::kFloat; }
bool t_number(const Value& v, CallArgs&) { return v.is_number(); }
bool t_string(const Value& v, CallArgs&) { return v.is_str(); }
bool t_mapping(const Value& v, CallArgs&) { return v.is_dict(); }
bool t_iterable(const Value& v, CallArgs&) { return v.is_undefined() || v.is_str() || v.is_list() || v.is_dict(); }
bool t_sequence(const Value& v, CallArgs&) { return v.is_undefined() || v.is_str() || v.is_list() || v.is_dict(); }
bool t_callable(const Value& v, CallArgs&) { return v.is_undefined() || v.kind() == Value::Kind::kCallable; }
bool t_escaped(const Value&, CallArgs&) { return false; }
bool t_lower(const Value& v, CallArgs&) { return py_islower(to_str(v)); }
bool t_upper(const Value& v, CallArgs&) { return py_isupper(to_str(v)); }

Value one_arg(const char* name, CallArgs& a) {
  ArgBinder b(name, a, {{"other", true, {}}});
  return b[0];
}
bool t_eq(const Value& v, CallArgs& a) { return equals(v, one_arg("eq", a)); }
bool t_ne(const Value& v, CallArgs& a) { return !equals(v, one_arg("ne", a)); }
bool t_lt(const Value& v, CallArgs& a) { return compare(v, one_arg("lt", a)) < 0; }
bool t_le(const Value& v, CallArgs& a) { return compare(v, one_arg("le", a)) <= 0; }
bool t_gt(const Value& v, CallArgs& a) { return compare(v, one_arg("gt", a)) > 0; }
bool t_ge(const Value& v, CallArgs& a) { return compare(v, one_arg("ge", a)) >= 0; }
bool t_in(const Value& v, CallArgs& a) { return contains(one_arg("in", a), v); }
bool t_sameas(const Value& v, CallArgs& a) {
  const Value o = one_arg("sameas", a);
  if (v.kind() != o.kind()) return false;
  switch (v.kind()) {
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kBool:
      return v.as_bool() == o.as_bool();
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kList:
      return &v.list() == &o.list();
    case Value::Kind::kDict:
      return &v.dict() == &o.dict();
    default:
      return equals(v, o);  // interned small values in CPython; an approximation
  }
}
bool t_odd(const Value& v, CallArgs& a) {
  ArgBinder b("odd", a, {});
  return equals(arith("%", v, Value::integer(2)), Value::integer(1));
}
bool t_even(const Value& v, CallArgs& a) {
  ArgBinder b("even", a, {});
  return equals(arith("%", v, Value::integer(2)), Value::integer(0));
}
bool t_divisibleby(const Value& v, CallArgs& a) {
  return equals(arith("%", v, one_arg("divisibleby", a)), Value::integer(0));
}
bool t_filter(const Value& v, CallArgs&) { return v.is_str() && is_supported_filter(v.str()); }
bool t_test(const Value& v, CallArgs&) { return v.is_str() && is_supported_test(v.str()); }

const std::map<std::string, TestFn>& tests() {
  static const std::map<std::string, TestFn> k = {
      {"defined", t_defined},
      {"undefined", t_undefined},
      {"none", t_none},
      {"boolean", t_boolean},
      {"false", t_false},
      {"true", t_true},
      {"integer", t_integer},
      {"float", t_float},
      {"number", t_number},
      {"string", t_string},
      {"mapping", t_mapping},
      {"iterable", t_iterable},
      {"sequence", t_sequence},
      {"callable", t_callable},
      {"escaped", t_escaped},
      {"lower", t_lower},
      {"upper", t_upper},
      {"eq", t_eq},
      {"equalto", t_eq},
      {"==", t_eq},
      {"ne", t_ne},
      {"!=", t_ne},
      {"lt", t_lt},
      {"lessthan", t_lt},
      {"<", t_lt},
      {"le", t_le},
      {"<=", t_le},
      {"gt", t_gt},
      {"greaterthan", t_gt},
      {">", t_gt},
      {"ge", t_ge},
      {">=", t_ge},
      {"in", t_in},
      {"sameas", t_sameas},
      {"odd", t_odd},
      {"even", t_even},
      {"divisibleby", t_divisibleby},
      {"filter", t_filter},
      {"test", t_test},
  };
  return k;
}

// ---------------------------------------------------------------------------------------------
// Globals

Value g_range(CallArgs& a) {
  if (!a.kw.empty()) throw_eval("range() takes no keyword arguments");
  if (a.pos.empty() || a.pos.size() > 3) throw_eval("range expected 1 to 3 arguments");
  int64_t start = 0, stop = 0, step = 1;
  if (a.pos.size() == 1) {
    stop = need_int(a.pos[0], "range() argument");
  } else {
    start = need_int(a.pos[0], "range() argument");
    stop = need_int(a.pos[1], "range() argument");
    if (a.pos.size() == 3) step = need_int(a.pos[2], "range() argument");
  }
  if (step == 0) throw_eval("range() arg 3 must not be zero");
  ValueList out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    // jinja2.sandbox.MAX_RANGE
    if (out.size() >= 100000) throw_eval("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    out.push_back(Value::integer(i));
  }
  return Value::make_list(std::move(out));
}

// dict(*args, **kwargs) as Python builds it: a mapping or an iterable of pairs, then keywords.
std::vector<std::pair<Value, Value>> dict_args(const char* func, CallArgs& a) {
  if (a.pos.size() > 1) throw_eval(fmt::format("{} expected at most 1 positional argument", func));
  std::vector<std::pair<Value, Value>> out;
  if (!a.pos.empty()) {
    const Value& src = a.pos[0];
    if (src.is_dict()) {
      out = src.dict().items;
    } else {
      for (const Value& pair : iterate(src)) {
        ValueList kv = iterate(pair);
        if (kv.size() != 2) throw_eval("dictionary update sequence element has wrong length; 2 is required");
        out.emplace_back(kv[0], kv[1]);
      }
    }
  }
  for (auto& [k, v] : a.kw) out.emplace_back(Value::string(k), v);
  return out;
}

Value g_namespace(CallArgs& a) {
  auto obj = std::make_shared<Object>();
  obj->type_name = "Namespace";
  obj->assignable = true;
  for (auto& [k, v] : dict_args("namespace", a)) obj->set(to_str(k), v);
  return Value{obj};
}

Value g_dict(CallArgs& a) {
  Value d = Value::make_dict();
  for (auto& [k, v] : dict_args("dict", a)) d.dict().set(k, v);
  return d;
}

Value g_raise_exception(CallArgs& a) {
  ArgBinder b("raise_exception", a, {{"message", true, {}}});
  throw_eval("raise_exception: " + to_str(b[0]));
}

Value g_strftime_now(CallArgs& a) {
  ArgBinder b("strftime_now", a, {{"format", true, {}}});
  const std::string& f = need_str(b[0], "strftime_now() format");
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::vector<char> buf(256 + f.size() * 16);
  const std::size_t n = f.empty() ? 0 : std::strftime(buf.data(), buf.size(), f.c_str(), &local);
  if (n == 0 && !f.empty()) throw_eval("strftime_now(): formatted time does not fit");
  return Value::string(std::string(buf.data(), n));
}

Value g_unsupported(const std::string& name) {
  return Value::make_callable(name, [name](CallArgs&) -> Value {
    throw_unsupported(fmt::format("the global '{}' is not supported by this template interpreter", name));
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------

bool is_supported_filter(const std::string& name) { return filters().count(name) > 0; }

bool is_jinja_filter(const std::string& name) {
  static const std::set<std::string> k = {"batch",    "center",    "filesizeformat", "forceescape", "format",
                                          "groupby",  "pprint",    "random",         "slice",       "striptags",
                                          "truncate", "urlencode", "urlize",         "wordwrap",    "xmlattr"};
  return is_supported_filter(name) || k.count(name) > 0;
}

bool is_supported_test(const std::string& name) { return tests().count(name) > 0; }
bool is_jinja_test(const std::string& name) { return is_supported_test(name); }

Value apply_filter(const std::string& name, const Value& input, CallArgs& args) {
  const auto it = filters().find(name);
  if (it == filters().end()) throw_eval(fmt::format("No filter named '{}'.", name));
  return it->second(input, args);
}

bool apply_test(const std::string& name, const Value& input, CallArgs& args) {
  const auto it = tests().find(name);
  if (it == tests().end()) throw_eval(fmt::format("No test named '{}'.", name));
  return it->second(input, args);
}

std::vector<std::pair<std::string, Value>> builtin_globals() {
  return {
      {"range", Value::make_callable("range", g_range)},
      {"namespace", Value::make_callable("namespace", g_namespace)},
      {"dict", Value::make_callable("dict", g_dict)},
      {"raise_exception", Value::make_callable("raise_exception", g_raise_exception)},
      {"strftime_now", Value::make_callable("strftime_now", g_strftime_now)},
      {"lipsum", g_unsupported("lipsum")},
      {"cycler", g_unsupported("cycler")},
      {"joiner", g_unsupported("joiner")},
  };
}

}  // namespace angelslim::jinja
