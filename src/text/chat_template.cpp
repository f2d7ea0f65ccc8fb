// ChatTemplate: loads a checkpoint's chat template and renders it with the Jinja-subset interpreter
// (jinja_lexer/jinja_parser/jinja_eval) the way transformers' apply_chat_template calls Jinja2:
// render(messages=..., tools=None, documents=None, add_generation_prompt=..., **extra).
#include "angelslim/text/chat_template.h"

#include <utf8proc.h>

#include <fstream>
#include <sstream>

#include "angelslim/core/error.h"
#include "angelslim/core/hash.h"
#include "jinja_builtins.h"
#include "jinja_eval.h"
#include "jinja_lexer.h"
#include "jinja_parser.h"

namespace angelslim {

struct ChatTemplate::Impl {
  jinja::StmtList body;
  jinja::ScopePtr builtins;
};

namespace {

void check_utf8(const std::string& s, const std::string& origin) {
  std::size_t i = 0, line = 1;
  while (i < s.size()) {
    utf8proc_int32_t cp = 0;
    const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                    static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
    if (n <= 0)
      throw FormatError(fmt::format("{}:{}: template source is not valid UTF-8 (byte offset {})", origin, line, i));
    if (cp == '\n') ++line;
    i += static_cast<std::size_t>(n);
  }
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open for reading", p.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError(fmt::format("{}: read error", p.string()));
  return ss.str();
}

template <class Json>
std::string render_impl(const jinja::StmtList& body, const jinja::ScopePtr& builtins, const std::string& origin,
                        const Json& messages, bool add_generation_prompt, const Json& extra) {
  if (!messages.is_array()) throw InvalidInput(fmt::format("{}: messages must be a JSON array", origin));
  if (!extra.is_object()) throw InvalidInput(fmt::format("{}: extra template variables must be a JSON object", origin));
  auto ctx = std::make_shared<jinja::Scope>();
  ctx->parent = builtins;
  try {
    ctx->vars["messages"] = jinja::from_json(messages);
    ctx->vars["tools"] = jinja::Value::none();
    ctx->vars["documents"] = jinja::Value::none();
    ctx->vars["add_generation_prompt"] = jinja::Value::boolean(add_generation_prompt);
    for (auto it = extra.begin(); it != extra.end(); ++it) ctx->vars[it.key()] = jinja::from_json(it.value());
  } catch (const jinja::EvalError& e) {
    throw InvalidInput(fmt::format("{}: {}", origin, e.what()));
  }
  return jinja::render_template(body, origin, ctx);
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, std::string origin)
    : source_(std::move(source)), origin_(std::move(origin)), impl_(std::make_unique<Impl>()) {
  check_utf8(source_, origin_);
  impl_->body = jinja::parse(jinja::tokenize(source_, origin_), origin_);
  impl_->builtins = std::make_shared<jinja::Scope>();
  for (auto& [name, value] : jinja::builtin_globals()) impl_->builtins->vars[name] = std::move(value);
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

ChatTemplate ChatTemplate::load(const std::filesystem::path& model_dir) {
  const auto jinja_path = model_dir / "chat_template.jinja";
  if (std::filesystem::is_regular_file(jinja_path)) return ChatTemplate(read_file(jinja_path), jinja_path.string());
  const auto config_path = model_dir / "tokenizer_config.json";
  if (std::filesystem::is_regular_file(config_path)) {
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(read_file(config_path));
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
      throw FormatError(fmt::format("{}: invalid JSON: {}", config_path.string(), e.what()));
    }
    const auto it = config.is_object() ? config.find("chat_template") : config.end();
    if (config.is_object() && it != config.end() && !it->is_null()) {
      const std::string origin = config_path.string() + "[chat_template]";
      if (it->is_string()) return ChatTemplate(it->get<std::string>(), origin);
      if (it->is_array()) {
        for (const auto& entry : *it) {
          if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
              !entry["name"].is_string() || !entry["template"].is_string()) {
            throw FormatError(
                fmt::format("{}: chat_template list entries must be {{\"name\": str, \"template\": str}}", origin));
          }
          if (entry["name"] == "default")
            return ChatTemplate(entry["template"].get<std::string>(), origin + "[default]");
        }
        throw InvalidInput(fmt::format("{}: the chat_template list has no entry named \"default\"", origin));
      }
      throw FormatError(fmt::format("{}: chat_template must be a string or a list of {{name, template}}, got {}",
                                    origin, it->type_name()));
    }
  }
  throw InvalidInput(
      fmt::format("{}: no chat template (expected chat_template.jinja or a \"chat_template\" entry in "
                  "tokenizer_config.json)",
                  model_dir.string()));
}

std::string ChatTemplate::render(const nlohmann::json& messages, bool add_generation_prompt,
                                 const nlohmann::json& extra) const {
  return render_impl(impl_->body, impl_->builtins, origin_, messages, add_generation_prompt, extra);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                 const nlohmann::ordered_json& extra) const {
  return render_impl(impl_->body, impl_->builtins, origin_, messages, add_generation_prompt, extra);
}

std::string ChatTemplate::sha256() const { return sha256_hex(source_); }

}  // namespace angelslim
