// Text calibration dataset (SPEC 1.7.1 record shapes and role rules, 1.7.2 record -> ids); see
// include/angelslim/data/text_dataset.h. Shuffling is std::mt19937_64 + an explicit Fisher-Yates with
// rejection sampling, so the sample order is the same with every standard library.
#include "angelslim/data/text_dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <fstream>
#include <random>
#include <sstream>

#include "angelslim/core/error.h"
#include "angelslim/core/parallel.h"

namespace angelslim {

namespace {

using ojson = nlohmann::ordered_json;

constexpr std::size_t kMaxWarnings = 10;

std::string to_lower_ascii(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// SPEC 1.7.1: contains "human" -> user; contains "gpt" -> assistant; system/user/assistant/tool kept.
bool normalise_role(const std::string& role, std::string* out) {
  if (role.find("human") != std::string::npos) {
    *out = "user";
  } else if (role.find("gpt") != std::string::npos) {
    *out = "assistant";
  } else if (role == "system" || role == "user" || role == "assistant" || role == "tool") {
    *out = role;
  } else {
    return false;
  }
  return true;
}

// A string, null (-> ""), or a list of {type: text, text} items (concatenated).
std::string content_text(const ojson& c, const char* field) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_null()) return "";
  if (c.is_array()) {
    std::string out;
    for (const auto& item : c) {
      if (!item.is_object() || !item.contains("type") || item["type"] != "text" || !item.contains("text") ||
          !item["text"].is_string()) {
        const std::string type = item.is_object() && item.contains("type") ? item["type"].dump() : item.dump();
        throw InvalidInput(
            fmt::format("{}: content items of a text dataset must be {{\"type\": \"text\", \"text\": "
                        "str}}, got {}",
                        field, type.substr(0, 80)));
      }
      out += item["text"].get<std::string>();
    }
    return out;
  }
  throw InvalidInput(fmt::format("{}: expected a string or a list of text items, got {}", field, c.type_name()));
}

const std::string* optional_string(const ojson& record, const char* key) {
  const auto it = record.find(key);
  if (it == record.end() || it->is_null()) return nullptr;
  if (!it->is_string()) throw InvalidInput(fmt::format("\"{}\" must be a string, got {}", key, it->type_name()));
  return it->get_ptr<const std::string*>();
}

const std::string& required_string(const ojson& record, const char* key) {
  const std::string* s = optional_string(record, key);
  if (!s) throw InvalidInput(fmt::format("\"{}\" must be a string, got null", key));
  return *s;
}

void prepend_system(ojson& messages, const std::string* system) {
  if (!system || system->empty()) return;
  if (!messages.empty() && messages[0]["role"] == "system") return;
  messages.insert(messages.begin(), ojson{{"role", "system"}, {"content", *system}});
}

// Normalises roles and checks for an assistant turn (SPEC 1.7.1); sets `status`.
void classify(PreparedRecord& rec, const std::vector<std::string>& raw_roles) {
  bool has_assistant = false;
  for (std::size_t i = 0; i < raw_roles.size(); ++i) {
    std::string role;
    if (!normalise_role(raw_roles[i], &role)) {
      rec.status = PreparedRecord::Status::kBadRole;
      rec.bad_role = raw_roles[i];
      return;
    }
    rec.messages[i]["role"] = role;
    has_assistant = has_assistant || role == "assistant";
  }
  if (!has_assistant) rec.status = PreparedRecord::Status::kNoAssistant;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open for reading", p.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError(fmt::format("{}: read error", p.string()));
  return ss.str();
}

}  // namespace

std::string_view record_shape_name(RecordShape s) {
  switch (s) {
    case RecordShape::kAppliedMessage:
      return "applied_message";
    case RecordShape::kMessages:
      return "messages";
    case RecordShape::kConversations:
      return "conversations";
    case RecordShape::kInputOutput:
      return "input_output";
    case RecordShape::kText:
      return "text";
  }
  return "unknown";
}

PreparedRecord prepare_record(const ojson& record) {
  if (!record.is_object())
    throw InvalidInput(fmt::format("a record must be a JSON object, got {}", record.type_name()));
  PreparedRecord rec;
  if (const auto it = record.find("tools"); it != record.end())
    rec.has_tools = !it->is_null() && !(it->is_array() && it->empty());
  std::vector<std::string> raw_roles;
  if (record.contains("applied_message")) {
    rec.shape = RecordShape::kAppliedMessage;
    rec.text = required_string(record, "applied_message");
    return rec;
  }
  if (record.contains("messages")) {
    rec.shape = RecordShape::kMessages;
    const ojson& msgs = record["messages"];
    if (!msgs.is_array()) throw InvalidInput(fmt::format("\"messages\" must be a list, got {}", msgs.type_name()));
    rec.messages = ojson::array();
    for (std::size_t i = 0; i < msgs.size(); ++i) {
      const ojson& m = msgs[i];
      const std::string where = fmt::format("messages[{}]", i);
      if (!m.is_object()) throw InvalidInput(fmt::format("{} must be an object, got {}", where, m.type_name()));
      if (!m.contains("role") || !m["role"].is_string())
        throw InvalidInput(fmt::format("{}.role must be a string", where));
      ojson out = m;
      out["content"] = m.contains("content") ? content_text(m["content"], (where + ".content").c_str()) : "";
      rec.messages.push_back(std::move(out));
    }
    prepend_system(rec.messages, optional_string(record, "system_prompt"));
  } else if (record.contains("conversations")) {
    rec.shape = RecordShape::kConversations;
    const ojson& turns = record["conversations"];
    if (!turns.is_array())
      throw InvalidInput(fmt::format("\"conversations\" must be a list, got {}", turns.type_name()));
    rec.messages = ojson::array();
    for (std::size_t i = 0; i < turns.size(); ++i) {
      const ojson& t = turns[i];
      const std::string where = fmt::format("conversations[{}]", i);
      if (!t.is_object()) throw InvalidInput(fmt::format("{} must be an object, got {}", where, t.type_name()));
      const char* role_key = t.contains("from") ? "from" : "role";
      const char* text_key = t.contains("value") ? "value" : "content";
      if (!t.contains(role_key) || !t[role_key].is_string())
        throw InvalidInput(fmt::format("{} needs a string \"from\" (or \"role\")", where));
      if (!t.contains(text_key)) throw InvalidInput(fmt::format("{} needs \"value\" (or \"content\")", where));
      std::string text = content_text(t[text_key], (where + "." + text_key).c_str());
      if (text.empty()) continue;  // SPEC 1.7.1: ShareGPT turns with empty text are dropped
      rec.messages.push_back(ojson{{"role", t[role_key]}, {"content", std::move(text)}});
    }
    const std::string* system = optional_string(record, "system");
    if (!system || system->empty()) system = optional_string(record, "system_prompt");
    prepend_system(rec.messages, system);
  } else if (record.contains("input") && record.contains("output")) {
    rec.shape = RecordShape::kInputOutput;
    rec.messages = ojson::array({ojson{{"role", "user"}, {"content", content_text(record["input"], "input")}},
                                 ojson{{"role", "assistant"}, {"content", content_text(record["output"], "output")}}});
    prepend_system(rec.messages, optional_string(record, "system_prompt"));
  } else if (record.contains("text")) {
    rec.shape = RecordShape::kText;
    rec.text = required_string(record, "text");
    return rec;
  } else {
    std::string keys;
    for (auto it = record.begin(); it != record.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
    throw InvalidInput(
        fmt::format("record has none of the accepted shapes (applied_message, messages, conversations, "
                    "input+output, text); its keys: [{}]",
                    keys));
  }
  for (const auto& m : rec.messages) raw_roles.push_back(m["role"].get<std::string>());
  classify(rec, raw_roles);
  return rec;
}

nlohmann::json DatasetStats::to_json() const {
  nlohmann::json shapes = nlohmann::json::object();
  for (int s = 0; s < 5; ++s) shapes[std::string(record_shape_name(static_cast<RecordShape>(s)))] = by_shape[s];
  return {
      {"lines_total", lines_total},
      {"blank_lines", blank_lines},
      {"records_read", records_read},
      {"records_visited", records_visited},
      {"samples_kept", samples_kept},
      {"num_samples_requested", num_samples_requested},
      {"skipped_no_assistant", skipped_no_assistant},
      {"skipped_too_short", skipped_too_short},
      {"skipped_bad_role", skipped_bad_role},
      {"tools_ignored", tools_ignored},
      {"truncated", truncated},
      {"tokens_total", tokens_total},
      {"tokens_truncated", tokens_truncated},
      {"min_len", min_len},
      {"max_len", max_len},
      {"shuffled", shuffled},
      {"seed", seed},
      {"kept_by_shape", shapes},
      {"warnings", warnings},
  };
}

std::vector<JsonlRecord> parse_jsonl(std::string_view data, const std::string& origin, int64_t* lines_total,
                                     int64_t* blank_lines) {
  std::vector<JsonlRecord> records;
  std::size_t pos = data.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;  // UTF-8 byte order mark
  int64_t line_no = 0;
  while (pos < data.size()) {
    std::size_t end = data.find('\n', pos);
    if (end == std::string_view::npos) end = data.size();
    std::string_view line = data.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t\r\f\v") == std::string_view::npos) {
      ++*blank_lines;
      continue;
    }
    try {
      records.push_back({line_no, ojson::parse(line)});
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
      const auto first = line.find_first_not_of(" \t");
      const bool array_file = line_no == 1 && first != std::string_view::npos && line[first] == '[';
      throw InvalidInput(
          fmt::format("{}:{}: not a valid JSON object ({}){}", origin, line_no, e.what(),
                      array_file ? "; expected one JSON object per line (jsonl), not a JSON array" : ""));
    }
  }
  *lines_total = line_no;
  return records;
}

std::vector<std::size_t> record_order(std::size_t n, bool shuffle, uint64_t seed) {
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  if (!shuffle) return order;
  std::mt19937_64 rng(seed);
  for (std::size_t i = n; i > 1; --i) {
    const uint64_t k = i;  // draw j in [0, i-1], no modulo bias
    const uint64_t limit = UINT64_MAX - UINT64_MAX % k;
    uint64_t x = rng();
    while (x >= limit) x = rng();
    std::swap(order[i - 1], order[static_cast<std::size_t>(x % k)]);
  }
  return order;
}

std::vector<CalibSample> load_text_dataset(const std::filesystem::path& path, const Tokenizer& tokenizer,
                                           const ChatTemplate& chat_template, int64_t max_seq_length,
                                           int64_t num_samples, bool shuffle, uint64_t seed, DatasetStats* stats_out) {
  const std::string file = path.string();
  if (max_seq_length < 2)
    throw InvalidInput(fmt::format("{}: max_seq_length must be >= 2, got {}", file, max_seq_length));
  if (to_lower_ascii(path.extension().string()) == ".parquet")
    throw InvalidInput(
        fmt::format("{}: parquet is not supported; convert it to jsonl (one JSON object per line)", file));
  return parse_text_dataset(read_file(path), file, tokenizer, chat_template, max_seq_length, num_samples, shuffle,
                            seed, stats_out);
}

std::vector<CalibSample> parse_text_dataset(std::string_view data, const std::string& file, const Tokenizer& tokenizer,
                                            const ChatTemplate& chat_template, int64_t max_seq_length,
                                            int64_t num_samples, bool shuffle, uint64_t seed, DatasetStats* stats_out) {
  if (max_seq_length < 2)
    throw InvalidInput(fmt::format("{}: max_seq_length must be >= 2, got {}", file, max_seq_length));

  DatasetStats st;
  st.num_samples_requested = num_samples;
  st.shuffled = shuffle;
  st.seed = seed;
  const auto records = parse_jsonl(data, file, &st.lines_total, &st.blank_lines);
  st.records_read = static_cast<int64_t>(records.size());

  const auto order = record_order(records.size(), shuffle, seed);

  auto warn = [&](int64_t line, const std::string& msg) {
    if (st.warnings.size() < kMaxWarnings) st.warnings.push_back(fmt::format("{}:{}: {}", file, line, msg));
  };

  // A record's preparation, template rendering and tokenization (independent of the others); errors carry the
  // record's line and are raised only if the sequential selection below reaches the record.
  struct Encoded {
    PreparedRecord rec;
    std::vector<int32_t> ids;
    std::exception_ptr error;
  };
  auto encode_record = [&](const JsonlRecord& r) {
    Encoded e;
    try {
      try {
        e.rec = prepare_record(r.value);
      } catch (const InvalidInput& ex) {
        throw InvalidInput(fmt::format("{}:{}: {}", file, r.line, ex.what()));
      }
      const PreparedRecord& rec = e.rec;
      if (rec.status != PreparedRecord::Status::kOk) return e;
      if (rec.shape == RecordShape::kText) {
        e.ids.push_back(tokenizer.bos_id());
        const auto body = tokenizer.encode(rec.text);
        e.ids.insert(e.ids.end(), body.begin(), body.end());
      } else if (rec.shape == RecordShape::kAppliedMessage) {
        e.ids = tokenizer.encode(rec.text);
      } else {
        std::string text;
        try {
          text = chat_template.render(rec.messages, false);
        } catch (const InvalidInput& ex) {
          throw InvalidInput(fmt::format("{}:{}: rendering the chat template failed: {}", file, r.line, ex.what()));
        } catch (const FormatError& ex) {
          throw FormatError(fmt::format("{}:{}: rendering the chat template failed: {}", file, r.line, ex.what()));
        }
        e.ids = tokenizer.encode(text);
      }
    } catch (...) {
      e.error = std::current_exception();
    }
    return e;
  };

  // The records are encoded on threads a window at a time (as many as samples are still wanted, at least 16) and
  // taken in order, so the selection, the statistics and the first error are those of a one-record-at-a-time pass.
  std::vector<CalibSample> samples;
  auto enough = [&] { return num_samples > 0 && static_cast<int64_t>(samples.size()) >= num_samples; };
  for (std::size_t w0 = 0; w0 < order.size() && !enough();) {
    const int64_t wanted = num_samples > 0 ? num_samples - static_cast<int64_t>(samples.size()) : 64;
    const std::size_t w1 = std::min(order.size(), w0 + static_cast<std::size_t>(std::max<int64_t>(16, wanted)));
    std::vector<Encoded> window(w1 - w0);
    parallel_for(static_cast<int64_t>(window.size()), [&](int64_t i) {
      window[static_cast<std::size_t>(i)] = encode_record(records[order[w0 + static_cast<std::size_t>(i)]]);
    });
    for (std::size_t k = 0; k < window.size() && !enough(); ++k) {
      const JsonlRecord& r = records[order[w0 + k]];
      Encoded& e = window[k];
      ++st.records_visited;
      if (e.error) std::rethrow_exception(e.error);
      const PreparedRecord& rec = e.rec;
      if (rec.status == PreparedRecord::Status::kBadRole) {
        ++st.skipped_bad_role;
        warn(r.line, fmt::format("skipped: unsupported role '{}'", rec.bad_role));
        continue;
      }
      if (rec.status == PreparedRecord::Status::kNoAssistant) {
        ++st.skipped_no_assistant;
        warn(r.line, "skipped: no assistant turn");
        continue;
      }
      if (rec.shape != RecordShape::kText && rec.shape != RecordShape::kAppliedMessage && rec.has_tools) {
        ++st.tools_ignored;
        warn(r.line, "\"tools\" ignored: rendered without the tool preamble");
      }
      std::vector<int32_t> ids = std::move(e.ids);
      CalibSample s;
      s.source_line = r.line;
      if (static_cast<int64_t>(ids.size()) > max_seq_length) {
        st.tokens_truncated += static_cast<int64_t>(ids.size()) - max_seq_length;
        ids.resize(static_cast<std::size_t>(max_seq_length));
        s.truncated = true;
      }
      if (ids.size() < 2) {
        ++st.skipped_too_short;
        warn(r.line, fmt::format("skipped: {} token(s), at least 2 needed", ids.size()));
        continue;
      }
      const auto len = static_cast<int64_t>(ids.size());
      st.truncated += s.truncated ? 1 : 0;
      st.tokens_total += len;
      st.min_len = st.samples_kept == 0 ? len : std::min(st.min_len, len);
      st.max_len = std::max(st.max_len, len);
      ++st.samples_kept;
      ++st.by_shape[static_cast<int>(rec.shape)];
      s.ids = std::move(ids);
      samples.push_back(std::move(s));
    }
    w0 = w1;
  }
  if (stats_out) *stats_out = std::move(st);
  return samples;
}

}  // namespace angelslim
