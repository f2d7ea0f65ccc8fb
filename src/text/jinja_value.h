// Values of the chat-template (Jinja subset) interpreter: Python's object model as Jinja2 sees it
// (None/bool/int/float/str/list/dict, namespace objects, callables, Jinja's Undefined) with Python's
// str()/repr()/==/< rules and json.dumps, so rendered text matches transformers byte for byte.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace angelslim::jinja {

// Thrown by value operations and builtins; the evaluator adds "<origin>:<line>:<col>: " and rethrows
// it as InvalidInput (a render error Jinja2 would raise too) or FormatError (`unsupported`: valid
// Jinja2 that this interpreter does not implement).
class EvalError : public std::runtime_error {
 public:
  EvalError(const std::string& msg, bool unsupported) : std::runtime_error(msg), unsupported_(unsupported) {}
  bool unsupported() const { return unsupported_; }

 private:
  bool unsupported_;
};
[[noreturn]] void throw_eval(const std::string& msg);
[[noreturn]] void throw_unsupported(const std::string& msg);

struct Value;
using ValueList = std::vector<Value>;
struct ValueDict;
struct Object;
struct CallArgs;
struct Callable;

// Jinja's Undefined; `hint` is the message of the UndefinedError raised when it is used.
struct Undefined {
  std::string hint;
};

struct Value {
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kStr, kList, kDict, kObject, kCallable };
  using Storage =
      std::variant<Undefined, std::monostate, bool, int64_t, double, std::string, std::shared_ptr<ValueList>,
                   std::shared_ptr<ValueDict>, std::shared_ptr<Object>, std::shared_ptr<Callable>>;
  Storage v;

  Kind kind() const { return static_cast<Kind>(v.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_str() const { return kind() == Kind::kStr; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_dict() const { return kind() == Kind::kDict; }
  // int or bool (Python's bool is an int subclass)
  bool is_int_like() const { return kind() == Kind::kInt || kind() == Kind::kBool; }
  bool is_number() const { return is_int_like() || kind() == Kind::kFloat; }

  const std::string& str() const { return std::get<std::string>(v); }
  bool as_bool() const { return std::get<bool>(v); }
  int64_t as_int() const;    // int or bool
  double as_double() const;  // int, bool or float
  ValueList& list() const { return *std::get<std::shared_ptr<ValueList>>(v); }
  ValueDict& dict() const { return *std::get<std::shared_ptr<ValueDict>>(v); }
  Object& object() const { return *std::get<std::shared_ptr<Object>>(v); }
  Callable& callable() const { return *std::get<std::shared_ptr<Callable>>(v); }
  const std::string& undefined_hint() const { return std::get<Undefined>(v).hint; }

  static Value undefined(std::string hint = {}) { return Value{Undefined{std::move(hint)}}; }
  static Value none() { return Value{std::monostate{}}; }
  static Value boolean(bool b) { return Value{b}; }
  static Value integer(int64_t i) { return Value{i}; }
  static Value number(double d) { return Value{d}; }
  static Value string(std::string s) { return Value{std::move(s)}; }
  static Value make_list(ValueList items = {}) { return Value{std::make_shared<ValueList>(std::move(items))}; }
  static Value make_dict();
  static Value make_callable(std::string name, std::function<Value(CallArgs&)> fn);
};

// Insertion-ordered mapping (Python 3.7+ dict); keys compare with Python ==.
struct ValueDict {
  std::vector<std::pair<Value, Value>> items;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
};

// Attribute bag: namespace() objects (assignable) and the `loop` object (read-only).
struct Object {
  std::string type_name;  // "Namespace", "LoopContext"
  bool assignable = false;
  std::vector<std::pair<std::string, Value>> attrs;
  const Value* find(std::string_view name) const;
  void set(const std::string& name, Value value);
};

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

struct Callable {
  std::string name;
  std::function<Value(CallArgs&)> fn;
};

// Binds CallArgs to a Python-style parameter list; throws EvalError on a missing, repeated or
// unexpected argument. Parameters without a default are required.
class ArgBinder {
 public:
  struct Param {
    const char* name;
    bool required;
    Value def;
  };
  ArgBinder(std::string_view func, CallArgs& args, std::vector<Param> params);
  Value& operator[](std::size_t i) { return bound_[i]; }
  bool given(std::size_t i) const { return given_[i]; }

 private:
  std::vector<Value> bound_;
  std::vector<bool> given_;
};

// ---- UTF-8 / Python str helpers (strings are UTF-8; Python counts code points) ----
std::u32string utf8_decode(std::string_view s);
void utf8_append(std::string& out, char32_t cp);
std::string utf8_encode(std::u32string_view s);
std::size_t utf8_length(std::string_view s);  // number of code points
// The code points for which Python's str.isspace() is true (also Python re's \s).
bool is_py_space(char32_t c);
// Python str.strip/lstrip/rstrip; `chars` == nullptr strips whitespace.
std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right);
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);

// ---- Python semantics ----
bool truthy(const Value& v);
// Python str(); Undefined renders as "" (jinja2.Undefined), floats use repr().
std::string to_str(const Value& v);
std::string repr(const Value& v);
std::string py_float_repr(double d);
// Python type name ("str", "int", "dict", "NoneType", ...).
std::string type_name(const Value& v);
// Jinja's object_type_repr: "dict object", "None", ...
std::string object_type_repr(const Value& v);
bool equals(const Value& a, const Value& b);
// Python a < b as -1/0/1 ordering; throws EvalError when the types are not orderable.
int compare(const Value& a, const Value& b);
// Raises the UndefinedError an operation on `v` would raise in Jinja2.
[[noreturn]] void fail_undefined(const Value& v);

// json.dumps(v, ensure_ascii, indent, separators, sort_keys) as transformers' tojson filter calls it.
// indent < 0: single line with separators (", ", ": ") unless `item_sep`/`key_sep` are given.
struct JsonDumpOptions {
  bool ensure_ascii = false;
  int indent = -1;
  std::string indent_str;               // used when non-empty (indent given as a string)
  std::optional<std::string> item_sep;  // default: ", " without indent, "," with indent
  std::string key_sep = ": ";
  bool sort_keys = false;
};
std::string json_dumps(const Value& v, const JsonDumpOptions& opt);

Value from_json(const nlohmann::json& j);
Value from_json(const nlohmann::ordered_json& j);

}  // namespace angelslim::jinja
