// Builtins of the chat-template interpreter: Jinja2 filters and tests, the sandboxed attribute/item
// lookup (jinja2.sandbox.ImmutableSandboxedEnvironment, as transformers uses), Python str/dict/list
// methods, and the globals transformers provides (raise_exception, strftime_now) plus range/namespace/dict.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "jinja_value.h"

namespace angelslim::jinja {

// Applies a filter (name checked by the parser); throws EvalError.
Value apply_filter(const std::string& name, const Value& input, CallArgs& args);
// Evaluates a test (name checked by the parser); throws EvalError.
bool apply_test(const std::string& name, const Value& input, CallArgs& args);

// `obj.name` (environment.getattr): methods first, then dict items; mutating methods of dict/list are
// "unsafe" (an Undefined whose use raises, as in the immutable sandbox); misses give Undefined.
Value get_attr(const Value& obj, const std::string& name);
// Python getattr(obj, name) under the sandbox (no dict-item fallback); nullopt when absent.
std::optional<Value> python_getattr(const Value& obj, const std::string& name);
// `obj[key]` (environment.getitem): items first, then attributes for string keys.
Value get_item(const Value& obj, const Value& key);
// obj[start:stop:step] on str/list with Python semantics (nullopt = omitted).
Value get_slice(const Value& obj, std::optional<int64_t> start, std::optional<int64_t> stop,
                std::optional<int64_t> step);
// list(v): list items, dict keys, str code points; Undefined iterates as empty; else EvalError.
ValueList iterate(const Value& v);
// `item in container`.
bool contains(const Value& container, const Value& item);

// The global functions visible to every template.
std::vector<std::pair<std::string, Value>> builtin_globals();

}  // namespace angelslim::jinja
