// Syntax tree and parser of the chat-template interpreter: the Jinja2 grammar (jinja2/parser.py) for
// expressions and the statements chat templates use: if/elif/else, for (with `if` filter and else),
// set (name, tuple, namespace attribute, block), macro, with, filter, generation, break/continue.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jinja_lexer.h"
#include "jinja_value.h"

namespace angelslim::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kConst,     // value
    kName,      // name
    kList,      // args = items
    kTuple,     // args = items (a Python tuple; represented as a list at run time)
    kDict,      // args = k0, v0, k1, v1, ...
    kGetAttr,   // args[0].name
    kGetItem,   // args[0][args[1]]
    kSlice,     // args = start, stop, step (each may be null)
    kCall,      // args[0](args[1..], kwargs)
    kFilter,    // args[0] | name(args[1..], kwargs); args[0] null inside {% filter %}
    kTest,      // args[0] is [not] name(args[1..])
    kNeg,       // -args[0]
    kPos,       // +args[0]
    kNot,       // not args[0]
    kAnd,       // args[0] and args[1]
    kOr,        // args[0] or args[1]
    kBinary,    // args[0] <name> args[1] for + - * / // % **
    kCompare,   // args[0] ops[0] args[1] ops[1] args[2] ... (ops: == != < <= > >= in notin)
    kCondExpr,  // args[1] if args[0] else args[2] (args[2] may be null)
    kConcat,    // args joined with ~
  };
  Kind kind;
  int line = 0, col = 0;
  Value value;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using StmtList = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ expr }}
    kIf,           // branches (cond, body); else_body
    kFor,          // for target in expr [if cond]: body; else_body
    kSet,          // set target = expr   (target: kName, kTuple of kName, or kGetAttr on a namespace)
    kSetBlock,     // set target [| filter] %} body {% endset (expr: filter chain with a null operand, or null)
    kMacro,        // macro name(params = defaults) body
    kWith,         // with (targets = values) body
    kFilterBlock,  // filter <expr> body endfilter
    kScope,        // body rendered in place ({% generation %} of transformers' AssistantTracker)
    kBreak,
    kContinue,
  };
  Kind kind;
  int line = 0, col = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr target;
  ExprPtr cond;
  std::vector<std::pair<ExprPtr, StmtList>> branches;
  StmtList body, else_body;
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;                         // one per param, null when required
  std::vector<std::pair<ExprPtr, ExprPtr>> assignments;  // kWith
};

// Parses a token stream; throws FormatError "<origin>:<line>:<col>: ..." on syntax errors and on
// constructs outside the supported subset (unknown filters/tests, include/extends/call/..., *args).
StmtList parse(const std::vector<Token>& tokens, const std::string& origin);

// Name registries shared by the parser (compile-time checks, like Jinja2's TemplateAssertionError)
// and the evaluator; defined in jinja_builtins.cpp.
bool is_supported_filter(const std::string& name);
bool is_jinja_filter(const std::string& name);  // a Jinja2 builtin, supported or not
bool is_supported_test(const std::string& name);
bool is_jinja_test(const std::string& name);

}  // namespace angelslim::jinja
