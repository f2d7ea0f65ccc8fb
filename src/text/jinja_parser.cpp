// Recursive-descent parser of the chat-template interpreter, mirroring jinja2/parser.py (3.1) so that
// precedence and quirks match: filters bind tighter than binary operators, `-x|f` is f(-x), `~` binds
// tighter than + and -, `if` conditions take no conditional expression.
#include "jinja_parser.h"

#include <fmt/format.h>

#include <set>

namespace angelslim::jinja {

namespace {

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, const std::string& origin) : toks_(tokens), origin_(origin) {}

  StmtList parse_template() {
    StmtList body = subparse({});
    if (cur().kind != TokKind::kEof) fail_unexpected(cur());
    return body;
  }

 private:
  const std::vector<Token>& toks_;
  const std::string& origin_;
  std::size_t pos_ = 0;
  int loop_depth_ = 0;

  const Token& cur() const { return toks_[pos_]; }
  const Token& look(std::size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  const Token& next() {
    const Token& t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool is_op(const char* op) const { return cur().kind == TokKind::kOp && cur().text == op; }
  bool is_name(const char* name) const { return cur().kind == TokKind::kName && cur().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }

  [[noreturn]] void fail(const Token& t, const std::string& msg) const { throw_format(origin_, t.line, t.col, msg); }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TokKind::kData:
        return "template data";
      case TokKind::kVarBegin:
        return "begin of print statement";
      case TokKind::kVarEnd:
        return "end of print statement";
      case TokKind::kBlockBegin:
        return "begin of statement block";
      case TokKind::kBlockEnd:
        return "end of statement block";
      case TokKind::kString:
        return "string";
      case TokKind::kInt:
      case TokKind::kFloat:
        return "number";
      case TokKind::kEof:
        return "end of template";
      default:
        return "'" + t.text + "'";
    }
  }
  [[noreturn]] void fail_unexpected(const Token& t) const { fail(t, "unexpected " + describe(t)); }

  void expect_op(const char* op) {
    if (!skip_op(op)) fail(cur(), fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  void expect_name(const char* name) {
    if (!skip_name(name)) fail(cur(), fmt::format("expected '{}', got {}", name, describe(cur())));
  }
  const Token& expect_kind(TokKind k, const char* what) {
    if (cur().kind != k) fail(cur(), fmt::format("expected {}, got {}", what, describe(cur())));
    return next();
  }
  void expect_block_end() { expect_kind(TokKind::kBlockEnd, "end of statement block"); }

  ExprPtr node(Expr::Kind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->col = at.col;
    return e;
  }
  StmtPtr stmt(Stmt::Kind kind, const Token& at) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = at.line;
    s->col = at.col;
    return s;
  }

  // ---- statements ----

  // Parses until a block tag whose first name is in `end_names`; stops with that name as current.
  StmtList subparse(const std::set<std::string>& end_names) {
    StmtList body;
    while (cur().kind != TokKind::kEof) {
      const Token& t = cur();
      if (t.kind == TokKind::kData) {
        auto s = stmt(Stmt::Kind::kText, t);
        s->text = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.kind == TokKind::kVarBegin) {
        next();
        auto s = stmt(Stmt::Kind::kOutput, t);
        s->expr = parse_tuple(true, false, {});
        expect_kind(TokKind::kVarEnd, "end of print statement");
        body.push_back(std::move(s));
      } else if (t.kind == TokKind::kBlockBegin) {
        next();
        if (cur().kind == TokKind::kName && end_names.count(cur().text)) return body;
        body.push_back(parse_statement());
        expect_block_end();
      } else {
        fail_unexpected(t);
      }
    }
    if (!end_names.empty()) {
      std::string names;
      for (const auto& n : end_names) names += (names.empty() ? "'" : ", '") + n + "'";
      fail(cur(), "unexpected end of template, expected " + names);
    }
    return body;
  }

  // Header already parsed: expects "%}", parses the body up to one of `end_names` (left as current).
  StmtList parse_body(const std::set<std::string>& end_names) {
    skip_op(":");
    expect_block_end();
    return subparse(end_names);
  }

  StmtPtr parse_statement() {
    const Token& t = cur();
    if (t.kind != TokKind::kName) fail(t, "tag name expected");
    const std::string& n = t.text;
    if (n == "if") return parse_if();
    if (n == "for") return parse_for();
    if (n == "set") return parse_set();
    if (n == "macro") return parse_macro();
    if (n == "with") return parse_with();
    if (n == "filter") return parse_filter_block();
    if (n == "print") return parse_print();
    if (n == "generation") {
      next();
      auto s = stmt(Stmt::Kind::kScope, t);
      s->body = parse_body({"endgeneration"});
      next();
      return s;
    }
    if (n == "break" || n == "continue") {
      if (loop_depth_ == 0) fail(t, fmt::format("'{}' outside of a loop", n));
      next();
      return stmt(n == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, t);
    }
    static const std::set<std::string> unsupported_tags = {"block", "extends",    "include", "import", "from",
                                                       "call",  "autoescape", "raw",     "do",     "trans"};
    if (unsupported_tags.count(n)) fail(t, fmt::format("the '{}' tag is not supported by this template interpreter", n));
    fail(t, fmt::format("encountered unknown tag '{}'", n));
  }

  StmtPtr parse_if() {
    auto s = stmt(Stmt::Kind::kIf, next());
    while (true) {
      ExprPtr cond = parse_tuple(false, false, {});
      StmtList body = parse_body({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(cond), std::move(body));
      const Token& end = next();
      if (end.text == "elif") continue;
      if (end.text == "else") {
        s->else_body = parse_body({"endif"});
        next();
      }
      break;
    }
    return s;
  }

  StmtPtr parse_for() {
    auto s = stmt(Stmt::Kind::kFor, next());
    s->target = parse_assign_target(false, {"in"});
    expect_name("in");
    s->expr = parse_tuple(false, false, {"recursive"});
    if (skip_name("if")) s->cond = parse_expression(true);
    if (is_name("recursive")) fail(cur(), "recursive loops are not supported by this template interpreter");
    ++loop_depth_;
    s->body = parse_body({"endfor", "else"});
    --loop_depth_;
    if (next().text == "else") {
      s->else_body = parse_body({"endfor"});
      next();
    }
    return s;
  }

  StmtPtr parse_set() {
    const Token& t = next();
    ExprPtr target = parse_assign_target(true, {});
    if (skip_op("=")) {
      auto s = stmt(Stmt::Kind::kSet, t);
      s->target = std::move(target);
      s->expr = parse_tuple(true, false, {});
      return s;
    }
    auto s = stmt(Stmt::Kind::kSetBlock, t);
    s->target = std::move(target);
    if (is_op("|")) s->expr = parse_filter(nullptr, false);
    s->body = parse_body({"endset"});
    next();
    return s;
  }

  StmtPtr parse_macro() {
    auto s = stmt(Stmt::Kind::kMacro, next());
    s->name = expect_kind(TokKind::kName, "macro name").text;
    expect_op("(");
    while (!is_op(")")) {
      if (!s->params.empty()) expect_op(",");
      if (is_op(")")) break;
      s->params.push_back(expect_kind(TokKind::kName, "parameter name").text);
      s->defaults.push_back(skip_op("=") ? parse_expression(true) : nullptr);
      if (!s->defaults.back() && s->defaults.size() > 1 && s->defaults[s->defaults.size() - 2]) {
        fail(cur(), "non-default argument follows default argument");
      }
    }
    expect_op(")");
    const int saved = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_body({"endmacro"});
    loop_depth_ = saved;
    next();
    return s;
  }

  StmtPtr parse_with() {
    auto s = stmt(Stmt::Kind::kWith, next());
    while (cur().kind != TokKind::kBlockEnd) {
      if (!s->assignments.empty()) expect_op(",");
      ExprPtr target = parse_assign_target(false, {});
      expect_op("=");
      s->assignments.emplace_back(std::move(target), parse_expression(true));
    }
    s->body = parse_body({"endwith"});
    next();
    return s;
  }

  StmtPtr parse_filter_block() {
    auto s = stmt(Stmt::Kind::kFilterBlock, next());
    s->expr = parse_filter(nullptr, true);
    s->body = parse_body({"endfilter"});
    next();
    return s;
  }

  StmtPtr parse_print() {
    const Token& t = next();
    auto s = stmt(Stmt::Kind::kOutput, t);
    auto tuple = node(Expr::Kind::kConcat, t);  // print a, b renders a then b
    while (cur().kind != TokKind::kBlockEnd) {
      if (!tuple->args.empty()) expect_op(",");
      tuple->args.push_back(parse_expression(true));
    }
    s->expr = std::move(tuple);
    return s;
  }

  // name | name.attr (namespace, with_namespace) | tuple of names
  ExprPtr parse_assign_target(bool with_namespace, const std::set<std::string>& extra_end) {
    if (with_namespace && cur().kind == TokKind::kName && look().kind == TokKind::kOp && look().text == ".") {
      const Token& ns = next();
      next();
      auto e = node(Expr::Kind::kGetAttr, ns);
      auto base = node(Expr::Kind::kName, ns);
      base->name = ns.text;
      e->args.push_back(std::move(base));
      e->name = expect_kind(TokKind::kName, "attribute name").text;
      return e;
    }
    ExprPtr target = parse_tuple(true, false, extra_end, /*simplified=*/true);
    auto check = [&](const Expr& e) {
      if (e.kind != Expr::Kind::kName) fail(cur(), "can't assign to this expression");
      if (e.name == "true" || e.name == "false" || e.name == "none" || e.name == "True" || e.name == "False" ||
          e.name == "None") {
        fail(cur(), fmt::format("can't assign to '{}'", e.name));
      }
    };
    if (target->kind == Expr::Kind::kTuple) {
      for (const auto& item : target->args) check(*item);
    } else {
      check(*target);
    }
    return target;
  }

  // ---- expressions ----

  bool is_tuple_end(const std::set<std::string>& extra_end) const {
    const Token& t = cur();
    if (t.kind == TokKind::kVarEnd || t.kind == TokKind::kBlockEnd) return true;
    if (t.kind == TokKind::kOp && t.text == ")") return true;
    return t.kind == TokKind::kName && extra_end.count(t.text);
  }

  ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens, const std::set<std::string>& extra_end,
                      bool simplified = false) {
    const Token& start = cur();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      if (simplified) {
        items.push_back(parse_primary());
      } else {
        items.push_back(parse_expression(with_condexpr));
      }
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail(start, "expected an expression, got " + describe(start));
    }
    auto e = node(Expr::Kind::kTuple, start);
    e->args = std::move(items);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    ExprPtr expr1 = parse_or();
    while (is_name("if")) {
      const Token& t = next();
      ExprPtr expr2 = parse_or();
      ExprPtr expr3 = skip_name("else") ? parse_condexpr() : nullptr;
      auto e = node(Expr::Kind::kCondExpr, t);
      e->args.push_back(std::move(expr2));
      e->args.push_back(std::move(expr1));
      e->args.push_back(std::move(expr3));
      expr1 = std::move(e);
    }
    return expr1;
  }

  ExprPtr binary(Expr::Kind kind, const Token& t, ExprPtr l, ExprPtr r, std::string op = {}) {
    auto e = node(kind, t);
    e->name = std::move(op);
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const Token& t = next();
      left = binary(Expr::Kind::kOr, t, std::move(left), parse_and());
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const Token& t = next();
      left = binary(Expr::Kind::kAnd, t, std::move(left), parse_not());
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      auto e = node(Expr::Kind::kNot, next());
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token& start = cur();
    ExprPtr expr = parse_math1();
    std::unique_ptr<Expr> cmp;
    while (true) {
      std::string op;
      const Token& t = cur();
      if (t.kind == TokKind::kOp &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">=")) {
        op = t.text;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && look().kind == TokKind::kName && look().text == "in") {
        op = "notin";
        next();
        next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(Expr::Kind::kCompare, start);
        cmp->args.push_back(std::move(expr));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(expr);
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = next();
      left = binary(Expr::Kind::kBinary, t, std::move(left), parse_concat(), t.text);
    }
    return left;
  }

  ExprPtr parse_concat() {
    const Token& start = cur();
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto e = node(Expr::Kind::kConcat, start);
    e->args.push_back(std::move(first));
    while (skip_op("~")) e->args.push_back(parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      left = binary(Expr::Kind::kBinary, t, std::move(left), parse_pow(), t.text);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const Token& t = next();
      left = binary(Expr::Kind::kBinary, t, std::move(left), parse_unary(true), "**");
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      e = node(t.text == "-" ? Expr::Kind::kNeg : Expr::Kind::kPos, t);
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    if (t.kind == TokKind::kName) {
      next();
      auto e = node(Expr::Kind::kConst, t);
      if (t.text == "true" || t.text == "True") {
        e->value = Value::boolean(true);
      } else if (t.text == "false" || t.text == "False") {
        e->value = Value::boolean(false);
      } else if (t.text == "none" || t.text == "None") {
        e->value = Value::none();
      } else {
        e->kind = Expr::Kind::kName;
        e->name = t.text;
      }
      return e;
    }
    if (t.kind == TokKind::kString) {
      auto e = node(Expr::Kind::kConst, t);
      std::string s = next().text;
      while (cur().kind == TokKind::kString) s += next().text;  // adjacent literals concatenate
      e->value = Value::string(std::move(s));
      return e;
    }
    if (t.kind == TokKind::kInt || t.kind == TokKind::kFloat) {
      auto e = node(Expr::Kind::kConst, t);
      e->value = t.kind == TokKind::kInt ? Value::integer(t.int_value) : Value::number(t.float_value);
      next();
      return e;
    }
    if (is_op("(")) {
      next();
      ExprPtr e = parse_tuple(true, true, {});
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      auto e = node(Expr::Kind::kList, next());
      while (!is_op("]")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("]")) break;
        e->args.push_back(parse_expression(true));
      }
      expect_op("]");
      return e;
    }
    if (is_op("{")) {
      auto e = node(Expr::Kind::kDict, next());
      while (!is_op("}")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("}")) break;
        e->args.push_back(parse_expression(true));
        expect_op(":");
        e->args.push_back(parse_expression(true));
      }
      expect_op("}");
      return e;
    }
    fail_unexpected(t);
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        const Token& dot = next();
        const Token& attr = cur();
        if (attr.kind == TokKind::kName) {
          auto g = node(Expr::Kind::kGetAttr, dot);
          g->name = next().text;
          g->args.push_back(std::move(e));
          e = std::move(g);
        } else if (attr.kind == TokKind::kInt) {
          auto g = node(Expr::Kind::kGetItem, dot);
          auto idx = node(Expr::Kind::kConst, attr);
          idx->value = Value::integer(next().int_value);
          g->args.push_back(std::move(e));
          g->args.push_back(std::move(idx));
          e = std::move(g);
        } else {
          fail(attr, "expected name or number");
        }
      } else if (is_op("[")) {
        const Token& lb = next();
        std::vector<ExprPtr> subs;
        while (!is_op("]")) {
          if (!subs.empty()) expect_op(",");
          subs.push_back(parse_subscribed());
        }
        expect_op("]");
        auto g = node(Expr::Kind::kGetItem, lb);
        g->args.push_back(std::move(e));
        if (subs.size() == 1) {
          g->args.push_back(std::move(subs[0]));
        } else {
          auto tup = node(Expr::Kind::kTuple, lb);
          tup->args = std::move(subs);
          g->args.push_back(std::move(tup));
        }
        e = std::move(g);
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscribed() {
    const Token& start = cur();
    std::vector<ExprPtr> parts;
    if (skip_op(":")) {
      parts.push_back(nullptr);
    } else {
      ExprPtr first = parse_expression(true);
      if (!skip_op(":")) return first;
      parts.push_back(std::move(first));
    }
    if (is_op(":") || is_op("]") || is_op(",")) {
      parts.push_back(nullptr);
    } else {
      parts.push_back(parse_expression(true));
    }
    if (skip_op(":")) {
      parts.push_back((is_op("]") || is_op(",")) ? nullptr : parse_expression(true));
    } else {
      parts.push_back(nullptr);
    }
    auto e = node(Expr::Kind::kSlice, start);
    e->args = std::move(parts);
    return e;
  }

  void parse_call_args(Expr& e) {
    const Token& lp = cur();
    expect_op("(");
    bool need_comma = false;
    while (!is_op(")")) {
      if (need_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**"))
        fail(cur(), "*args / **kwargs in calls are not supported by this template interpreter");
      if (cur().kind == TokKind::kName && look().kind == TokKind::kOp && look().text == "=") {
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail(lp, "invalid syntax for function call expression");
        e.args.push_back(parse_expression(true));
      }
      need_comma = true;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = node(Expr::Kind::kCall, cur());
    e->line = callee->line;  // report errors at the callee, e.g. raise_exception(...)
    e->col = callee->col;
    e->args.push_back(std::move(callee));
    parse_call_args(*e);
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        e = parse_filter(std::move(e), false);
      } else if (is_name("is")) {
        e = parse_test(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  std::string dotted_name() {
    std::string name = expect_kind(TokKind::kName, "name").text;
    while (skip_op(".")) name += "." + expect_kind(TokKind::kName, "name").text;
    return name;
  }

  // `operand` null: the filter section of {% filter %} / {% set x | f %} (applied to the body).
  ExprPtr parse_filter(ExprPtr operand, bool start_inline) {
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      start_inline = false;
      const Token& t = cur();
      std::string name = dotted_name();
      if (!is_supported_filter(name)) {
        fail(t, is_jinja_filter(name)
                    ? fmt::format("the '{}' filter is not supported by this template interpreter", name)
                    : fmt::format("no filter named '{}'", name));
      }
      auto e = node(Expr::Kind::kFilter, t);
      e->name = std::move(name);
      e->args.push_back(std::move(operand));
      if (is_op("(")) parse_call_args(*e);
      operand = std::move(e);
    }
    return operand;
  }

  ExprPtr parse_test(ExprPtr operand) {
    const Token& is_tok = next();
    const bool negated = skip_name("not");
    const Token& t = cur();
    std::string name = dotted_name();
    if (!is_supported_test(name)) {
      fail(t, is_jinja_test(name) ? fmt::format("the '{}' test is not supported by this template interpreter", name)
                                  : fmt::format("no test named '{}'", name));
    }
    auto e = node(Expr::Kind::kTest, is_tok);
    e->name = std::move(name);
    e->negated = negated;
    e->args.push_back(std::move(operand));
    const Token& a = cur();
    if (is_op("(")) {
      parse_call_args(*e);
    } else if ((a.kind == TokKind::kName || a.kind == TokKind::kString || a.kind == TokKind::kInt ||
                a.kind == TokKind::kFloat || is_op("(") || is_op("[") || is_op("{")) &&
               !(is_name("else") || is_name("or") || is_name("and"))) {
      if (is_name("is")) fail(a, "You cannot chain multiple tests with is");
      e->args.push_back(parse_postfix(parse_primary()));
    }
    return e;
  }
};

}  // namespace

StmtList parse(const std::vector<Token>& tokens, const std::string& origin) {
  return Parser(tokens, origin).parse_template();
}

}  // namespace angelslim::jinja
