// Evaluator of the chat-template interpreter; semantics follow jinja2/compiler.py + runtime.py (3.1)
// under transformers' ImmutableSandboxedEnvironment: default Undefined (renders as "", fails when
// used), loop contexts, macros, namespace attribute assignment, loopcontrols (break/continue).
#include "jinja_eval.h"

#include <fmt/format.h>

#include "angelslim/core/error.h"
#include "jinja_arith.h"
#include "jinja_builtins.h"

namespace angelslim::jinja {

const Value* Scope::lookup(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent.get()) {
    const auto it = s->vars.find(name);
    if (it != s->vars.end()) return &it->second;
  }
  return nullptr;
}

namespace {

enum class Flow { kNormal, kBreak, kContinue };

// Python's default recursion limit is 1000 frames; a Jinja macro call costs a few of them.
constexpr int kMaxMacroDepth = 200;

class Renderer {
 public:
  explicit Renderer(const std::string& origin) : origin_(origin) {}

  Flow exec(const StmtList& body, const ScopePtr& scope, std::string& out) {
    for (const StmtPtr& s : body) {
      const Flow f = exec_stmt(*s, scope, out);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

 private:
  const std::string& origin_;
  const Value* hole_ = nullptr;  // body text fed to a {% filter %} / {% set x | f %} chain
  int macro_depth_ = 0;

  [[noreturn]] void rethrow(const EvalError& err, int line, int col) const {
    const std::string msg = fmt::format("{}:{}:{}: {}", origin_, line, col, err.what());
    if (err.unsupported()) throw FormatError(msg);
    throw InvalidInput(msg);
  }

  Flow exec_stmt(const Stmt& s, const ScopePtr& scope, std::string& out) {
    try {
      return exec_inner(s, scope, out);
    } catch (const EvalError& err) {
      rethrow(err, s.line, s.col);
    }
  }

  Value eval(const Expr& e, const ScopePtr& scope) {
    try {
      return eval_inner(e, scope);
    } catch (const EvalError& err) {
      rethrow(err, e.line, e.col);
    }
  }

  static ScopePtr child(const ScopePtr& parent) {
    auto s = std::make_shared<Scope>();
    s->parent = parent;
    return s;
  }

  std::string render_body(const StmtList& body, const ScopePtr& scope) {
    std::string buf;
    exec(body, scope, buf);
    return buf;
  }

  Value apply_filter_chain(const Expr& chain, const ScopePtr& scope, const Value& text) {
    const Value* saved = hole_;
    hole_ = &text;
    Value v = eval(chain, scope);
    hole_ = saved;
    return v;
  }

  void assign(const Expr& target, const Value& v, const ScopePtr& scope) {
    if (target.kind == Expr::Kind::kName) {
      scope->vars[target.name] = v;
      return;
    }
    if (target.kind == Expr::Kind::kTuple) {
      const ValueList items = iterate(v);
      if (items.size() != target.args.size()) {
        throw_eval(
            items.size() > target.args.size()
                ? fmt::format("too many values to unpack (expected {})", target.args.size())
                : fmt::format("not enough values to unpack (expected {}, got {})", target.args.size(), items.size()));
      }
      for (std::size_t i = 0; i < items.size(); ++i) assign(*target.args[i], items[i], scope);
      return;
    }
    // namespace attribute: {% set ns.attr = v %}
    const std::string& base = target.args[0]->name;
    const Value* ns = scope->lookup(base);
    if (!ns || ns->kind() != Value::Kind::kObject || !ns->object().assignable)
      throw_eval("cannot assign attribute on non-namespace object");
    ns->object().set(target.name, v);
  }

  Flow exec_inner(const Stmt& s, const ScopePtr& scope, std::string& out) {
    switch (s.kind) {
      case Stmt::Kind::kText:
        out += s.text;
        return Flow::kNormal;
      case Stmt::Kind::kOutput:
        out += to_str(eval(*s.expr, scope));
        return Flow::kNormal;
      case Stmt::Kind::kIf:
        for (const auto& [cond, body] : s.branches)
          if (truthy(eval(*cond, scope))) return exec(body, scope, out);
        return exec(s.else_body, scope, out);
      case Stmt::Kind::kFor:
        return exec_for(s, scope, out);
      case Stmt::Kind::kSet:
        assign(*s.target, eval(*s.expr, scope), scope);
        return Flow::kNormal;
      case Stmt::Kind::kSetBlock: {
        Value text = Value::string(render_body(s.body, child(scope)));
        assign(*s.target, s.expr ? apply_filter_chain(*s.expr, scope, text) : text, scope);
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro:
        scope->vars[s.name] = make_macro(s, scope);
        return Flow::kNormal;
      case Stmt::Kind::kWith: {
        std::vector<Value> values;
        for (const auto& kv : s.assignments) values.push_back(eval(*kv.second, scope));
        ScopePtr inner = child(scope);
        for (std::size_t i = 0; i < values.size(); ++i) assign(*s.assignments[i].first, values[i], inner);
        return exec(s.body, inner, out);
      }
      case Stmt::Kind::kFilterBlock: {
        const Value text = Value::string(render_body(s.body, child(scope)));
        out += to_str(apply_filter_chain(*s.expr, scope, text));
        return Flow::kNormal;
      }
      case Stmt::Kind::kScope:
        return exec(s.body, scope, out);
      case Stmt::Kind::kBreak:
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  Flow exec_for(const Stmt& s, const ScopePtr& scope, std::string& out) {
    ValueList items = iterate(eval(*s.expr, scope));
    if (s.cond) {
      ValueList kept;
      for (Value& x : items) {
        ScopePtr probe = child(scope);
        assign(*s.target, x, probe);
        if (truthy(eval(*s.cond, probe))) kept.push_back(std::move(x));
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(s.else_body, child(scope), out);
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      ScopePtr iter = child(scope);
      assign(*s.target, items[static_cast<std::size_t>(i)], iter);
      auto loop = std::make_shared<Object>();
      loop->type_name = "LoopContext";
      loop->attrs = {
          {"index0", Value::integer(i)},
          {"index", Value::integer(i + 1)},
          {"revindex0", Value::integer(n - i - 1)},
          {"revindex", Value::integer(n - i)},
          {"first", Value::boolean(i == 0)},
          {"last", Value::boolean(i == n - 1)},
          {"length", Value::integer(n)},
          {"depth0", Value::integer(0)},
          {"depth", Value::integer(1)},
          {"previtem", i > 0 ? items[static_cast<std::size_t>(i - 1)] : Value::undefined("there is no previous item")},
          {"nextitem", i + 1 < n ? items[static_cast<std::size_t>(i + 1)] : Value::undefined("there is no next item")},
          {"cycle", Value::make_callable("loop.cycle",
                                         [i](CallArgs& a) -> Value {
                                           if (!a.kw.empty()) throw_eval("loop.cycle() takes no keyword arguments");
                                           if (a.pos.empty()) throw_eval("no items for cycling given");
                                           return a.pos[static_cast<std::size_t>(i) % a.pos.size()];
                                         })},
      };
      iter->vars["loop"] = Value{loop};
      if (exec(s.body, iter, out) == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  Value make_macro(const Stmt& s, const ScopePtr& scope) {
    // A weak reference: the macro lives in `scope`, so a strong one would be a cycle.
    std::weak_ptr<Scope> weak = scope;
    const Stmt* def = &s;
    return Value::make_callable(s.name, [this, def, weak](CallArgs& args) -> Value {
      ScopePtr parent = weak.lock();
      if (!parent) throw_eval(fmt::format("macro '{}' called after its defining scope ended", def->name));
      if (macro_depth_ >= kMaxMacroDepth) throw_eval("maximum recursion depth exceeded in macro calls");
      if (args.pos.size() > def->params.size())
        throw_eval(fmt::format("macro '{}' takes not more than {} argument(s)", def->name, def->params.size()));
      ScopePtr inner = child(parent);
      std::vector<bool> given(def->params.size(), false);
      for (std::size_t i = 0; i < args.pos.size(); ++i) {
        inner->vars[def->params[i]] = args.pos[i];
        given[i] = true;
      }
      for (auto& [k, v] : args.kw) {
        std::size_t i = 0;
        while (i < def->params.size() && def->params[i] != k) ++i;
        if (i == def->params.size()) throw_eval(fmt::format("macro '{}' takes no keyword argument '{}'", def->name, k));
        if (given[i]) throw_eval(fmt::format("macro '{}' got multiple values for argument '{}'", def->name, k));
        inner->vars[k] = v;
        given[i] = true;
      }
      for (std::size_t i = 0; i < def->params.size(); ++i) {
        if (given[i]) continue;
        inner->vars[def->params[i]] =
            def->defaults[i] ? eval(*def->defaults[i], inner)
                             : Value::undefined(fmt::format("parameter '{}' was not provided", def->params[i]));
      }
      ++macro_depth_;
      std::string buf;
      try {
        exec(def->body, inner, buf);
      } catch (...) {
        --macro_depth_;
        throw;
      }
      --macro_depth_;
      return Value::string(std::move(buf));
    });
  }

  CallArgs eval_args(const Expr& e, const ScopePtr& scope) {
    CallArgs args;
    for (std::size_t i = 1; i < e.args.size(); ++i) args.pos.push_back(eval(*e.args[i], scope));
    for (const auto& [k, v] : e.kwargs) args.kw.emplace_back(k, eval(*v, scope));
    return args;
  }

  static std::optional<int64_t> slice_bound(const Value& v) {
    if (v.is_none()) return std::nullopt;
    if (!v.is_int_like()) throw_eval("slice indices must be integers or None");
    return v.as_int();
  }

  bool compare_op(const std::string& op, const Value& l, const Value& r) {
    if (op == "==") return equals(l, r);
    if (op == "!=") return !equals(l, r);
    if (op == "in") return contains(r, l);
    if (op == "notin") return !contains(r, l);
    const int c = compare(l, r);
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  Value eval_inner(const Expr& e, const ScopePtr& scope) {
    switch (e.kind) {
      case Expr::Kind::kConst:
        return e.value;
      case Expr::Kind::kName: {
        if (const Value* v = scope->lookup(e.name)) return *v;
        return Value::undefined(fmt::format("'{}' is undefined", e.name));
      }
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        ValueList items;
        for (const ExprPtr& x : e.args) items.push_back(eval(*x, scope));
        return Value::make_list(std::move(items));
      }
      case Expr::Kind::kDict: {
        Value d = Value::make_dict();
        for (std::size_t i = 0; i + 1 < e.args.size(); i += 2) {
          Value k = eval(*e.args[i], scope);
          if (k.is_list() || k.is_dict() || k.is_undefined())
            throw_eval(fmt::format("unhashable type: '{}'", type_name(k)));
          d.dict().set(std::move(k), eval(*e.args[i + 1], scope));
        }
        return d;
      }
      case Expr::Kind::kGetAttr:
        return get_attr(eval(*e.args[0], scope), e.name);
      case Expr::Kind::kGetItem: {
        Value obj = eval(*e.args[0], scope);
        const Expr& key = *e.args[1];
        if (key.kind == Expr::Kind::kSlice) {
          std::optional<int64_t> b[3];
          for (int i = 0; i < 3; ++i)
            if (key.args[static_cast<std::size_t>(i)])
              b[i] = slice_bound(eval(*key.args[static_cast<std::size_t>(i)], scope));
          return get_slice(obj, b[0], b[1], b[2]);
        }
        return get_item(obj, eval(key, scope));
      }
      case Expr::Kind::kSlice:
        throw_eval("slice outside of a subscript");
      case Expr::Kind::kCall: {
        Value callee = eval(*e.args[0], scope);
        CallArgs args = eval_args(e, scope);
        if (callee.is_undefined()) fail_undefined(callee);
        if (callee.kind() != Value::Kind::kCallable)
          throw_eval(fmt::format("'{}' object is not callable", type_name(callee)));
        return callee.callable().fn(args);
      }
      case Expr::Kind::kFilter: {
        Value input;
        if (e.args[0]) {
          input = eval(*e.args[0], scope);
        } else if (hole_) {
          input = *hole_;
        }
        CallArgs args = eval_args(e, scope);
        return apply_filter(e.name, input, args);
      }
      case Expr::Kind::kTest: {
        Value input = eval(*e.args[0], scope);
        CallArgs args = eval_args(e, scope);
        return Value::boolean(apply_test(e.name, input, args) != e.negated);
      }
      case Expr::Kind::kNeg:
      case Expr::Kind::kPos: {
        Value v = eval(*e.args[0], scope);
        if (v.is_undefined()) fail_undefined(v);
        if (!v.is_number())
          throw_eval(
              fmt::format("bad operand type for unary {}: '{}'", e.kind == Expr::Kind::kNeg ? '-' : '+', type_name(v)));
        if (v.is_int_like()) {
          if (e.kind == Expr::Kind::kPos) return Value::integer(v.as_int());
          if (v.as_int() == INT64_MIN) throw_unsupported("integer result beyond 64 bits");
          return Value::integer(-v.as_int());
        }
        return Value::number(e.kind == Expr::Kind::kNeg ? -v.as_double() : v.as_double());
      }
      case Expr::Kind::kNot:
        return Value::boolean(!truthy(eval(*e.args[0], scope)));
      case Expr::Kind::kAnd: {
        Value l = eval(*e.args[0], scope);
        return truthy(l) ? eval(*e.args[1], scope) : l;
      }
      case Expr::Kind::kOr: {
        Value l = eval(*e.args[0], scope);
        return truthy(l) ? l : eval(*e.args[1], scope);
      }
      case Expr::Kind::kBinary: {
        Value l = eval(*e.args[0], scope);
        Value r = eval(*e.args[1], scope);
        return arith(e.name, l, r);
      }
      case Expr::Kind::kCompare: {
        Value left = eval(*e.args[0], scope);
        for (std::size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.args[i + 1], scope);
          if (!compare_op(e.ops[i], left, right)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case Expr::Kind::kCondExpr: {
        if (truthy(eval(*e.args[0], scope))) return eval(*e.args[1], scope);
        if (e.args[2]) return eval(*e.args[2], scope);
        return Value::undefined(
            fmt::format("the inline if-expression on line {} evaluated to false and no else "
                        "section was defined.",
                        e.line));
      }
      case Expr::Kind::kConcat: {
        std::string s;
        for (const ExprPtr& x : e.args) s += to_str(eval(*x, scope));
        return Value::string(std::move(s));
      }
    }
    throw_eval("unknown expression");
  }
};

}  // namespace

std::string render_template(const StmtList& body, const std::string& origin, const ScopePtr& globals) {
  Renderer r(origin);
  auto top = std::make_shared<Scope>();
  top->parent = globals;
  std::string out;
  r.exec(body, top, out);
  return out;
}

}  // namespace angelslim::jinja
