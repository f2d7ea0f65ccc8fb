// Text calibration dataset (SPEC 1.7.1, 1.7.2): jsonl records (applied_message, messages, ShareGPT
// conversations, input/output, raw text) -> chat template -> token ids, with skipping, right truncation,
// seeded shuffling and counts for the run report.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "angelslim/text/chat_template.h"
#include "angelslim/text/tokenizer.h"

namespace angelslim {

struct CalibSample {
  std::vector<int32_t> ids;  // token ids, 2 <= size <= max_seq_length
  int64_t source_line = 0;   // 1-based line of the record in the data file
  bool truncated = false;    // the encoded record was longer than max_seq_length
};

struct DatasetStats {
  int64_t lines_total = 0;      // lines in the file
  int64_t blank_lines = 0;      // skipped silently
  int64_t records_read = 0;     // non-blank lines (all parsed and validated as JSON)
  int64_t records_visited = 0;  // records processed before num_samples was reached
  int64_t samples_kept = 0;
  int64_t skipped_no_assistant = 0;   // chat records without an assistant turn
  int64_t skipped_too_short = 0;      // fewer than 2 tokens
  int64_t skipped_bad_role = 0;       // a role other than system/user/assistant/tool (*human*, *gpt* mapped)
  int64_t tools_ignored = 0;          // records with a "tools" key, rendered without tools (SPEC 1.6.3)
  int64_t truncated = 0;              // kept samples cut to max_seq_length
  int64_t tokens_total = 0;           // sum of kept sample lengths (after truncation)
  int64_t tokens_truncated = 0;       // tokens cut off by truncation
  int64_t min_len = 0, max_len = 0;   // over kept samples (0 when none)
  int64_t num_samples_requested = 0;  // <= 0: all
  bool shuffled = false;
  uint64_t seed = 0;
  int64_t by_shape[5] = {0, 0, 0, 0, 0};  // kept samples per RecordShape
  std::vector<std::string> warnings;      // first few skip reasons, "<file>:<line>: ..."

  nlohmann::json to_json() const;
};

enum class RecordShape { kAppliedMessage, kMessages, kConversations, kInputOutput, kText };
std::string_view record_shape_name(RecordShape s);

// One record reduced to what the tokenizer sees.
struct PreparedRecord {
  enum class Status { kOk, kNoAssistant, kBadRole };
  RecordShape shape = RecordShape::kText;
  Status status = Status::kOk;
  nlohmann::ordered_json messages;  // chat shapes: [{"role", "content": str, ...}], roles normalised
  std::string text;                 // kAppliedMessage / kText
  bool has_tools = false;
  std::string bad_role;  // the offending role when status == kBadRole
};

// Classifies a record (shapes checked in SPEC 1.7.1 order) and normalises it: *human* -> user, *gpt* ->
// assistant, content lists of {type: text, text} concatenated, null content -> "", system_prompt
// (and ShareGPT "system") prepended as a system message unless the first message is one, ShareGPT turns
// with empty text dropped. Throws InvalidInput (no file/line; the loader adds them) on a record of no
// known shape or a field of the wrong type.
PreparedRecord prepare_record(const nlohmann::ordered_json& record);

// One non-blank line of a jsonl file, parsed (line: 1-based).
struct JsonlRecord {
  int64_t line = 0;
  nlohmann::ordered_json value;
};
// Splits jsonl text into parsed records: a UTF-8 byte order mark is skipped, CRLF accepted, blank lines counted in
// *blank_lines. Throws InvalidInput "<origin>:<line>: not a valid JSON object (...)" for a line that is not JSON.
// *lines_total: the number of lines.
std::vector<JsonlRecord> parse_jsonl(std::string_view data, const std::string& origin, int64_t* lines_total,
                                     int64_t* blank_lines);
// The order records are visited in: 0..n-1, or with `shuffle` a Fisher-Yates permutation with std::mt19937_64(seed)
// and unbiased draws by rejection.
std::vector<std::size_t> record_order(std::size_t n, bool shuffle, uint64_t seed);

// Reads `path` (jsonl; .json with one object per line too), optionally shuffles the records
// (std::mt19937_64(seed) + Fisher-Yates), then renders/encodes records in that order until
// `num_samples` samples are kept (num_samples <= 0: all). Chat records: ids = encode(template(messages,
// add_generation_prompt=false)); applied_message: encode(text); text: [bos_id()] + encode(text).
// Over-long samples keep their first max_seq_length ids; samples with < 2 ids are skipped.
// Throws IoError (unreadable file), InvalidInput ("<file>:<line>: ..." for a line that is not JSON, a
// record of no known shape, a template error; max_seq_length < 2; parquet input).
std::vector<CalibSample> load_text_dataset(const std::filesystem::path& path, const Tokenizer& tokenizer,
                                           const ChatTemplate& chat_template, int64_t max_seq_length,
                                           int64_t num_samples, bool shuffle, uint64_t seed,
                                           DatasetStats* stats = nullptr);
// The same for jsonl text already read; `origin` stands for the file in messages.
std::vector<CalibSample> parse_text_dataset(std::string_view data, const std::string& origin,
                                            const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                            int64_t max_seq_length, int64_t num_samples, bool shuffle, uint64_t seed,
                                            DatasetStats* stats = nullptr);

}  // namespace angelslim
