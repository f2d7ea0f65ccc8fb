// Evaluator of the chat-template interpreter: renders a parsed template with Jinja2's scoping
// (a for-loop iteration is its own scope; if does not open one; namespace objects are shared).
#pragma once
#include <memory>
#include <string>
#include <unordered_map>

#include "jinja_parser.h"
#include "jinja_value.h"

namespace angelslim::jinja {

struct Scope {
  std::shared_ptr<Scope> parent;
  std::unordered_map<std::string, Value> vars;
  const Value* lookup(const std::string& name) const;
};
using ScopePtr = std::shared_ptr<Scope>;

// Renders `body`; variables resolve through `globals`. Throws InvalidInput (what Jinja2 would raise
// while rendering, raise_exception included) or FormatError (an unsupported construct met at run
// time), both prefixed "<origin>:<line>:<col>: ".
std::string render_template(const StmtList& body, const std::string& origin, const ScopePtr& globals);

}  // namespace angelslim::jinja
