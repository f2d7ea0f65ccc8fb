// Tokenizer::load: picks the family of a checkpoint directory (tokenizer.json, else hy.tiktoken) and
// reads BOS/EOS from tokenizer_config.json and generation_config.json (SPEC 1.6, 1.7.2).
#include "angelslim/text/tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "angelslim/core/error.h"
#include "angelslim/text/bpe_tokenizer.h"
#include "angelslim/text/tiktoken_tokenizer.h"
#include "text/tokenizer_util.h"

namespace angelslim {
namespace {

using nlohmann::json;

std::optional<json> read_optional_json(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  const std::string text = read_tokenizer_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
}

// A token field of tokenizer_config.json: "content" string, {"content": ...} object, or null/absent.
std::optional<std::string> token_content(const json& config, const char* key, const std::filesystem::path& path) {
  if (!config.is_object() || !config.contains(key) || config[key].is_null()) return std::nullopt;
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  ANGELSLIM_CHECK(v.is_object() && v.contains("content") && v["content"].is_string(), FormatError,
                  "{}: {}: expected a string or {{\"content\": string}}, got {}", path.string(), key, v.dump());
  return v["content"].get<std::string>();
}

template <typename Tok>
void configure(Tok& tok, const std::filesystem::path& model_dir) {
  const auto config_path = model_dir / "tokenizer_config.json";
  const auto gen_path = model_dir / "generation_config.json";
  std::vector<int32_t> eos;
  auto add_eos = [&](int32_t id) {
    if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  };
  if (const auto config = read_optional_json(config_path)) {
    ANGELSLIM_CHECK(config->is_object(), FormatError, "{}: expected a JSON object", config_path.string());
    if (const auto bos = token_content(*config, "bos_token", config_path)) {
      const auto id = tok.special_id(*bos);
      ANGELSLIM_CHECK(id.has_value(), FormatError, "{}: bos_token \"{}\" is not a special token of the tokenizer",
                      config_path.string(), *bos);
      tok.set_bos_id(*id);
    }
    if (const auto eos_text = token_content(*config, "eos_token", config_path)) {
      const auto id = tok.special_id(*eos_text);
      ANGELSLIM_CHECK(id.has_value(), FormatError, "{}: eos_token \"{}\" is not a special token of the tokenizer",
                      config_path.string(), *eos_text);
      add_eos(*id);
    }
  }
  if (const auto gen = read_optional_json(gen_path)) {
    ANGELSLIM_CHECK(gen->is_object(), FormatError, "{}: expected a JSON object", gen_path.string());
    if (gen->contains("eos_token_id") && !(*gen)["eos_token_id"].is_null()) {
      const json& v = (*gen)["eos_token_id"];
      std::vector<json> items;
      if (v.is_array()) {
        items.assign(v.begin(), v.end());
      } else {
        items.push_back(v);
      }
      for (const json& item : items) {
        ANGELSLIM_CHECK(item.is_number_integer() && item.get<int64_t>() >= 0 && item.get<int64_t>() < tok.vocab_size(),
                        FormatError, "{}: eos_token_id: expected ids in [0, {}), got {}", gen_path.string(),
                        tok.vocab_size(), v.dump());
        add_eos(static_cast<int32_t>(item.get<int64_t>()));
      }
    }
  }
  tok.set_eos_ids(std::move(eos));
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const std::filesystem::path& model_dir) {
  std::error_code ec;
  ANGELSLIM_CHECK(std::filesystem::is_directory(model_dir, ec), InvalidInput, "{}: not a directory",
                  model_dir.string());
  const auto json_path = model_dir / "tokenizer.json";
  const auto tiktoken_path = model_dir / "hy.tiktoken";
  if (std::filesystem::is_regular_file(json_path, ec)) {
    auto tok = BpeTokenizer::from_file(json_path);
    configure(*tok, model_dir);
    return tok;
  }
  if (std::filesystem::is_regular_file(tiktoken_path, ec)) {
    auto tok = TiktokenTokenizer::from_file(tiktoken_path);
    configure(*tok, model_dir);
    return tok;
  }
  throw InvalidInput(fmt::format("{}: no tokenizer.json or hy.tiktoken in the directory", model_dir.string()));
}

}  // namespace angelslim
