// Attribute/item lookup and Python methods of str/dict/list for the chat-template interpreter, with the
// rules of jinja2.sandbox.ImmutableSandboxedEnvironment (as transformers renders chat templates):
// attributes before items for `a.b`, items before attributes for `a[b]`, `_private` names hidden,
// mutating dict/list methods "unsafe".
#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <set>

#include "jinja_builtins.h"
#include "jinja_pystr.h"

namespace angelslim::jinja {

namespace {

Value bound_method(const Value& self, const std::string& name) {
  return Value::make_callable(type_name(self) + "." + name, [self, n = name](CallArgs& args) -> Value {
    const std::string func = type_name(self) + "." + n;
    if (self.is_dict()) {
      if (n == "items" || n == "keys" || n == "values") {
        ArgBinder b(func, args, {});
        ValueList out;
        for (const auto& [k, v] : self.dict().items) {
          if (n == "items")
            out.push_back(Value::make_list({k, v}));
          else
            out.push_back(n == "keys" ? k : v);
        }
        return Value::make_list(std::move(out));
      }
      if (n == "get") {
        ArgBinder b(func, args, {{"key", true, {}}, {"default", false, Value::none()}});
        const Value* v = self.dict().find(b[0]);
        return v ? *v : b[1];
      }
      if (n == "copy") {
        ArgBinder b(func, args, {});
        Value d = Value::make_dict();
        d.dict() = self.dict();
        return d;
      }
    } else if (self.is_list()) {
      if (n == "index" || n == "count") {
        ArgBinder b(func, args, {{"value", true, {}}});
        int64_t count = 0;
        const ValueList& l = self.list();
        for (std::size_t i = 0; i < l.size(); ++i) {
          if (!equals(l[i], b[0])) continue;
          if (n == "index") return Value::integer(static_cast<int64_t>(i));
          ++count;
        }
        if (n == "index") throw_eval(fmt::format("{} is not in list", repr(b[0])));
        return Value::integer(count);
      }
      if (n == "copy") {
        ArgBinder b(func, args, {});
        return Value::make_list(self.list());
      }
    } else if (self.is_str()) {
      const std::string& s = self.str();
      if (n == "upper" || n == "lower" || n == "title" || n == "capitalize" || n == "isdigit" || n == "isalpha" ||
          n == "isalnum" || n == "isspace" || n == "islower" || n == "isupper") {
        ArgBinder b(func, args, {});
        if (n == "upper") return Value::string(py_upper(s));
        if (n == "lower") return Value::string(py_lower(s));
        if (n == "title") return Value::string(py_title_method(s));
        if (n == "capitalize") return Value::string(py_capitalize(s));
        if (n == "islower") return Value::boolean(py_islower(s));
        if (n == "isupper") return Value::boolean(py_isupper(s));
        const std::u32string u = u32(s);
        auto all = [&](auto pred) { return !u.empty() && std::all_of(u.begin(), u.end(), pred); };
        if (n == "isdigit")
          return Value::boolean(all(
              [](char32_t c) { return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND; }));
        if (n == "isalpha") return Value::boolean(all(is_alpha));
        if (n == "isalnum") return Value::boolean(all([](char32_t c) { return is_alpha(c) || is_numeric(c); }));
        return Value::boolean(all(is_py_space));
      }
      if (n == "strip" || n == "lstrip" || n == "rstrip") {
        ArgBinder b(func, args, {{"chars", false, Value::none()}});
        const std::string* chars = b[0].is_none() ? nullptr : &need_str(b[0], "strip() chars");
        return Value::string(py_strip(s, chars, n != "rstrip", n != "lstrip"));
      }
      if (n == "split" || n == "rsplit") {
        ArgBinder b(func, args, {{"sep", false, Value::none()}, {"maxsplit", false, Value::integer(-1)}});
        return Value::make_list(py_split(s, b[0], need_int(b[1], "maxsplit"), n == "rsplit"));
      }
      if (n == "splitlines") {
        ArgBinder b(func, args, {{"keepends", false, Value::boolean(false)}});
        ValueList out;
        for (auto& line : py_splitlines(s, truthy(b[0]))) out.push_back(Value::string(std::move(line)));
        return Value::make_list(std::move(out));
      }
      if (n == "startswith" || n == "endswith") {
        ArgBinder b(func, args, {{"prefix", true, {}}});
        ValueList cands = b[0].is_list() ? b[0].list() : ValueList{b[0]};
        for (const Value& c : cands) {
          const std::string& p = need_str(c, "startswith/endswith argument");
          const bool hit = n == "startswith"
                               ? s.compare(0, p.size(), p) == 0
                               : (s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0);
          if (hit) return Value::boolean(true);
        }
        return Value::boolean(false);
      }
      if (n == "removeprefix" || n == "removesuffix") {
        ArgBinder b(func, args, {{"affix", true, {}}});
        const std::string& p = need_str(b[0], "affix");
        if (n == "removeprefix" && s.compare(0, p.size(), p) == 0) return Value::string(s.substr(p.size()));
        if (n == "removesuffix" && !p.empty() && s.size() >= p.size() &&
            s.compare(s.size() - p.size(), p.size(), p) == 0)
          return Value::string(s.substr(0, s.size() - p.size()));
        return self;
      }
      if (n == "replace") {
        ArgBinder b(func, args, {{"old", true, {}}, {"new", true, {}}, {"count", false, Value::integer(-1)}});
        return Value::string(py_replace(s, need_str(b[0], "old"), need_str(b[1], "new"), need_int(b[2], "count")));
      }
      if (n == "find" || n == "rfind" || n == "count") {
        ArgBinder b(func, args, {{"sub", true, {}}});
        const std::string& sub = need_str(b[0], "substring");
        if (n == "count") {
          if (sub.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s)) + 1);
          int64_t c = 0;
          for (std::size_t k = s.find(sub); k != std::string::npos; k = s.find(sub, k + sub.size())) ++c;
          return Value::integer(c);
        }
        const std::size_t k = n == "find" ? s.find(sub) : s.rfind(sub);
        return Value::integer(
            k == std::string::npos ? -1 : static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, k))));
      }
      if (n == "join") {
        ArgBinder b(func, args, {{"iterable", true, {}}});
        std::string out;
        bool first = true;
        for (const Value& x : iterate(b[0])) {
          if (!first) out += s;
          first = false;
          out += need_str(x, "join() item");
        }
        return Value::string(std::move(out));
      }
    }
    throw_unsupported(fmt::format("method {}() is not supported by this template interpreter", func));
  });
}

const std::set<std::string>& str_methods_supported() {
  static const std::set<std::string> k = {"upper",      "lower",      "title",    "capitalize",   "isdigit",
                                          "isalpha",    "isalnum",    "isspace",  "islower",      "isupper",
                                          "strip",      "lstrip",     "rstrip",   "split",        "rsplit",
                                          "splitlines", "startswith", "endswith", "removeprefix", "removesuffix",
                                          "replace",    "find",       "rfind",    "count",        "join"};
  return k;
}
const std::set<std::string>& str_methods_python() {
  static const std::set<std::string> k = {
      "casefold",  "center",       "encode",     "expandtabs",  "format",    "format_map", "index",     "isascii",
      "isdecimal", "isidentifier", "isnumeric",  "isprintable", "istitle",   "ljust",      "maketrans", "partition",
      "rindex",    "rjust",        "rpartition", "swapcase",    "translate", "zfill"};
  return k;
}

Value unsafe(const Value& obj, const std::string& name) {
  return Value::undefined(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, type_name(obj)));
}

Value missing_attr(const Value& obj, const std::string& name) {
  return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_type_repr(obj), name));
}

}  // namespace

// Attribute lookup without the dict-item fallback (Python getattr under the sandbox rules).
std::optional<Value> python_getattr(const Value& obj, const std::string& name) {
  if (!name.empty() && name[0] == '_') return std::nullopt;
  switch (obj.kind()) {
    case Value::Kind::kDict: {
      static const std::set<std::string> safe = {"items", "keys", "values", "get", "copy"};
      static const std::set<std::string> mutating = {"clear", "pop", "popitem", "setdefault", "update"};
      if (safe.count(name)) return bound_method(obj, name);
      if (mutating.count(name)) return unsafe(obj, name);
      if (name == "fromkeys") throw_unsupported("dict.fromkeys() is not supported by this template interpreter");
      return std::nullopt;
    }
    case Value::Kind::kList: {
      static const std::set<std::string> safe = {"index", "count", "copy"};
      static const std::set<std::string> mutating = {"append", "clear",  "extend",  "insert",
                                                     "pop",    "remove", "reverse", "sort"};
      if (safe.count(name)) return bound_method(obj, name);
      if (mutating.count(name)) return unsafe(obj, name);
      return std::nullopt;
    }
    case Value::Kind::kStr:
      if (str_methods_supported().count(name)) return bound_method(obj, name);
      if (str_methods_python().count(name))
        throw_unsupported(fmt::format("method str.{}() is not supported by this template interpreter", name));
      return std::nullopt;
    case Value::Kind::kObject:
      if (const Value* v = obj.object().find(name)) return *v;
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail_undefined(obj);
  if (auto v = python_getattr(obj, name)) return *v;
  if (obj.is_dict())
    if (const Value* v = obj.dict().find(std::string_view(name))) return *v;
  return missing_attr(obj, name);
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail_undefined(obj);
  switch (obj.kind()) {
    case Value::Kind::kDict:
      if (const Value* v = obj.dict().find(key)) return *v;
      break;
    case Value::Kind::kList:
    case Value::Kind::kStr:
      if (key.is_int_like()) {
        int64_t i = key.as_int();
        if (obj.is_list()) {
          const auto n = static_cast<int64_t>(obj.list().size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return obj.list()[static_cast<std::size_t>(i)];
        } else {
          const std::u32string u = u32(obj.str());
          const auto n = static_cast<int64_t>(u.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n)
            return Value::string(utf8_encode(std::u32string_view(u).substr(static_cast<std::size_t>(i), 1)));
        }
        return Value::undefined(fmt::format("{} has no element {}", object_type_repr(obj), repr(key)));
      }
      break;
    default:
      break;
  }
  if (key.is_str()) {
    if (auto v = python_getattr(obj, key.str())) return *v;
    return missing_attr(obj, key.str());
  }
  return Value::undefined(fmt::format("{} has no element {}", object_type_repr(obj), repr(key)));
}

Value get_slice(const Value& obj, std::optional<int64_t> start, std::optional<int64_t> stop,
                std::optional<int64_t> step) {
  if (obj.is_undefined()) fail_undefined(obj);
  if (!obj.is_list() && !obj.is_str()) throw_eval(fmt::format("'{}' object is not subscriptable", type_name(obj)));
  const int64_t st = step.value_or(1);
  if (st == 0) throw_eval("slice step cannot be zero");
  std::u32string u;
  if (obj.is_str()) u = u32(obj.str());
  const int64_t n = obj.is_str() ? static_cast<int64_t>(u.size()) : static_cast<int64_t>(obj.list().size());
  // PySlice_AdjustIndices
  const int64_t lower = st > 0 ? 0 : -1, upper = st > 0 ? n : n - 1;
  auto adjust = [&](std::optional<int64_t> x, int64_t dflt) {
    if (!x) return dflt;
    int64_t v = *x;
    if (v < 0) {
      v += n;
      if (v < lower) v = lower;
    } else if (v > upper) {
      v = upper;
    }
    return v;
  };
  const int64_t b = adjust(start, st > 0 ? lower : upper);
  const int64_t e = adjust(stop, st > 0 ? upper : lower);
  if (obj.is_str()) {
    std::u32string out;
    for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(u[static_cast<std::size_t>(i)]);
    return Value::string(utf8_encode(out));
  }
  ValueList out;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(obj.list()[static_cast<std::size_t>(i)]);
  return Value::make_list(std::move(out));
}

ValueList iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return v.list();
    case Value::Kind::kDict: {
      ValueList keys;
      for (const auto& kv : v.dict().items) keys.push_back(kv.first);
      return keys;
    }
    case Value::Kind::kStr: {
      ValueList chars;
      for (char32_t c : u32(v.str())) {
        std::string s;
        utf8_append(s, c);
        chars.push_back(Value::string(std::move(s)));
      }
      return chars;
    }
    default:
      throw_eval(fmt::format("'{}' object is not iterable", type_name(v)));
  }
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kStr:
      if (!item.is_str())
        throw_eval(fmt::format("'in <string>' requires string as left operand, not {}", type_name(item)));
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kList:
      return std::any_of(container.list().begin(), container.list().end(),
                         [&](const Value& x) { return equals(x, item); });
    case Value::Kind::kDict:
      return container.dict().find(item) != nullptr;
    case Value::Kind::kUndefined:
      return false;  // Undefined iterates as empty
    default:
      throw_eval(fmt::format("argument of type '{}' is not iterable", type_name(container)));
  }
}

}  // namespace angelslim::jinja
