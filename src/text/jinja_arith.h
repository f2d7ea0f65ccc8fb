// Python's binary arithmetic operators (+ - * / // % **) for the chat-template interpreter.
#pragma once
#include <string>

#include "jinja_value.h"

namespace angelslim::jinja {

// op is one of "+", "-", "*", "/", "//", "%", "**". Throws EvalError on a TypeError, a division by
// zero, or (as unsupported) an integer result beyond 64 bits.
Value arith(const std::string& op, const Value& a, const Value& b);

}  // namespace angelslim::jinja
