// Python's binary arithmetic operators for the chat-template interpreter: int/float promotion
// (bool counts as int), floor division and modulo with the sign of the divisor, str/list + and *.
#include "jinja_arith.h"

#include <fmt/format.h>

#include <cmath>

namespace angelslim::jinja {

namespace {

[[noreturn]] void type_error(const std::string& op, const Value& a, const Value& b) {
  throw_eval(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b)));
}

[[noreturn]] void overflow() {
  throw_unsupported("integer result beyond 64 bits (Python ints are unbounded; this interpreter uses int64)");
}

Value repeat(const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_str() ? Value::string("") : Value::make_list();
  const std::size_t unit = seq.is_str() ? seq.str().size() : seq.list().size();
  // At most 4M characters or items: far beyond any chat template, and small enough that a template cannot stall
  // the run (fuzz/fuzz_chat_template.cpp timed out on "0" * 100000000).
  if (unit > 0 && static_cast<uint64_t>(n) > (uint64_t{1} << 22) / unit) throw_eval("repetition result is too large");
  if (seq.is_str()) {
    const std::size_t total = unit * static_cast<std::size_t>(n);
    std::string out;
    out.reserve(total);
    out = seq.str();
    while (!out.empty() && out.size() * 2 <= total) out += out;  // doubling: O(log n) appends
    out.append(out.data(), total - out.size());
    return Value::string(std::move(out));
  }
  ValueList out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.list().begin(), seq.list().end());
  return Value::make_list(std::move(out));
}

double float_mod(double x, double y) {
  double m = std::fmod(x, y);
  if (m != 0.0) {
    if ((y < 0) != (m < 0)) m += y;
  } else {
    m = std::copysign(0.0, y);
  }
  return m;
}

double float_floordiv(double x, double y) {
  // CPython float_floor_div / _float_div_mod.
  double mod = std::fmod(x, y);
  double div = (x - mod) / y;
  if (mod != 0.0 && ((y < 0) != (mod < 0))) div -= 1.0;
  if (div == 0.0) return std::copysign(0.0, x / y);
  double floordiv = std::floor(div);
  if (div - floordiv > 0.5) floordiv += 1.0;
  return floordiv;
}

}  // namespace

Value arith(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) {
    const bool ints = a.is_int_like() && b.is_int_like();
    if (ints) {
      const int64_t x = a.as_int(), y = b.as_int();
      int64_t r = 0;
      if (op == "+") {
        if (__builtin_add_overflow(x, y, &r)) overflow();
        return Value::integer(r);
      }
      if (op == "-") {
        if (__builtin_sub_overflow(x, y, &r)) overflow();
        return Value::integer(r);
      }
      if (op == "*") {
        if (__builtin_mul_overflow(x, y, &r)) overflow();
        return Value::integer(r);
      }
      if (op == "//" || op == "%") {
        if (y == 0) throw_eval(op == "%" ? "integer modulo by zero" : "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) overflow();
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          q -= 1;
          m += y;
        }
        return Value::integer(op == "//" ? q : m);
      }
      if (op == "**" && y >= 0) {
        int64_t acc = 1, base = x, e = y;
        while (e > 0) {
          if (e & 1)
            if (__builtin_mul_overflow(acc, base, &acc)) overflow();
          e >>= 1;
          if (e > 0 && __builtin_mul_overflow(base, base, &base)) overflow();
        }
        return Value::integer(acc);
      }
    }
    const double x = a.as_double(), y = b.as_double();
    if (op == "+") return Value::number(x + y);
    if (op == "-") return Value::number(x - y);
    if (op == "*") return Value::number(x * y);
    if (op == "/") {
      if (y == 0.0) throw_eval("division by zero");
      return Value::number(x / y);
    }
    if (op == "//") {
      if (y == 0.0) throw_eval("float floor division by zero");
      return Value::number(float_floordiv(x, y));
    }
    if (op == "%") {
      if (y == 0.0) throw_eval("float modulo");
      return Value::number(float_mod(x, y));
    }
    if (op == "**") {
      if (x == 0.0 && y < 0) throw_eval("0.0 cannot be raised to a negative power");
      return Value::number(std::pow(x, y));
    }
    type_error(op, a, b);
  }
  if (op == "+") {
    if (a.is_str() && b.is_str()) return Value::string(a.str() + b.str());
    if (a.is_list() && b.is_list()) {
      ValueList out = a.list();
      out.insert(out.end(), b.list().begin(), b.list().end());
      return Value::make_list(std::move(out));
    }
    if (a.is_str()) throw_eval(fmt::format("can only concatenate str (not \"{}\") to str", type_name(b)));
  }
  if (op == "*") {
    if ((a.is_str() || a.is_list()) && b.is_int_like()) return repeat(a, b.as_int());
    if ((b.is_str() || b.is_list()) && a.is_int_like()) return repeat(b, a.as_int());
  }
  if (op == "%" && a.is_str())
    throw_unsupported("printf-style string formatting (str % args) is not supported by this template interpreter");
  type_error(op, a, b);
}

}  // namespace angelslim::jinja
