// Chat templates: a Jinja-subset interpreter that renders the `chat_template` of a checkpoint
// (chat_template.jinja or tokenizer_config.json) exactly as transformers' apply_chat_template does.
#pragma once
#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace angelslim {

class ChatTemplate {
 public:
  // Parses template source; throws FormatError (with line/column) on syntax it does not support.
  ChatTemplate(std::string source, std::string origin);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // Loads chat_template.jinja if present, else tokenizer_config.json["chat_template"] (a string, or
  // a list of {name, template} where "default" is used). Throws InvalidInput when neither exists.
  static ChatTemplate load(const std::filesystem::path& model_dir);

  // messages: [{"role": ..., "content": ...}, ...]. `extra` holds additional template variables
  // (e.g. tools, enable_thinking); bos_token/eos_token are provided by the caller through `extra` too.
  std::string render(const nlohmann::json& messages, bool add_generation_prompt,
                     const nlohmann::json& extra = nlohmann::json::object()) const;
  // Same, keeping the key order of the input objects (as Python dicts do), which `tojson` shows.
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

  const std::string& source() const { return source_; }
  // Hex sha256 of the template source string.
  std::string sha256() const;

 private:
  struct Impl;
  std::string source_;
  std::string origin_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace angelslim
