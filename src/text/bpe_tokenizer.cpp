// HF tokenizer.json byte-level BPE (SPEC 1.6.1), following HF `tokenizers`: added tokens split first
// (leftmost-longest), then normalizer, pre-tokenizer (Split / ByteLevel) and BPE by merge rank.
#include "angelslim/text/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>
#include <utility>

#include "angelslim/core/error.h"
#include "text/bpe_merge.h"
#include "text/pcre_regex.h"
#include "text/tokenizer_util.h"

namespace angelslim {
namespace {

using nlohmann::json;

// Ids above this are rejected: the decode table is indexed by id (16.7M entries is far above the
// 120818 of the largest Hunyuan vocabulary).
constexpr int64_t kMaxTokenId = int64_t{1} << 24;

// The regex ByteLevel applies when use_regex is true (GPT-2's pattern, as in HF tokenizers).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Sequence normalizers / pre-tokenizers may nest; real files nest once. Bounded against stack overflow.
constexpr int kMaxNesting = 16;

constexpr std::string_view kDefaultBos = "<｜hy_begin▁of▁sentence｜>";

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct SplitStep {
  Pcre2Regex regex;
  SplitBehavior behavior;
  bool invert;
};

using Range = std::pair<std::size_t, std::size_t>;

// One piece split by `step`: HF's NormalizedString::split over the matches of the pattern.
void split_piece(const SplitStep& step, std::string_view piece, std::vector<std::string_view>& out,
                 std::vector<Range>& scratch) {
  scratch.clear();
  step.regex.find_all(piece, scratch);
  // Segments covering the piece in order: (begin, end, is_match); gaps are never empty.
  struct Segment {
    std::size_t begin, end;
    bool is_match;
  };
  std::vector<Segment> segments;
  segments.reserve(scratch.size() * 2 + 1);
  std::size_t pos = 0;
  for (const auto& [b, e] : scratch) {
    if (b > pos) segments.push_back({pos, b, step.invert});
    segments.push_back({b, e, !step.invert});
    pos = e;
  }
  if (pos < piece.size()) segments.push_back({pos, piece.size(), step.invert});

  std::vector<Range> pieces;
  pieces.reserve(segments.size());
  switch (step.behavior) {
    case SplitBehavior::kIsolated:
      for (const auto& s : segments) pieces.emplace_back(s.begin, s.end);
      break;
    case SplitBehavior::kRemoved:
      for (const auto& s : segments) {
        if (!s.is_match) pieces.emplace_back(s.begin, s.end);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& s : segments) {
        if (s.is_match && !previous_match && !pieces.empty()) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;  // scanning right to left
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !pieces.empty()) {
          pieces.back().first = it->begin;
        } else {
          pieces.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const auto& s : segments) {
        if (s.is_match == previous_match && !pieces.empty()) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  for (const auto& [b, e] : pieces) {
    if (e > b) out.push_back(piece.substr(b, e - b));
  }
}

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : std::string();
}

bool get_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
  if (!obj.contains(key) || obj[key].is_null()) return fallback;
  ANGELSLIM_CHECK(obj[key].is_boolean(), FormatError, "{}.{}: expected a boolean, got {}", where, key, obj[key].dump());
  return obj[key].get<bool>();
}

}  // namespace

struct BpeTokenizer::Impl {
  std::string origin;
  // Added tokens.
  LiteralMatcher added_matcher;
  std::unordered_map<std::string, int32_t> added_by_content;
  // Normalizer chain (empty for null).
  std::vector<UnicodeForm> normalizers;
  // Pre-tokenizer: Splits, then the ByteLevel step.
  std::vector<SplitStep> splits;
  bool add_prefix_space = false;
  std::optional<Pcre2Regex> byte_level_regex;
  // Model.
  std::unordered_map<std::string, int32_t> vocab;  // byte-level token string -> id
  std::array<int32_t, 256> byte_ids{};             // id of each single byte, -1 when absent
  std::optional<int32_t> unk_id;
  bool fuse_unk = false;
  bool ignore_merges = false;
  BpeMerger merger;
  WordCache cache;
  // Decoding: bytes of every id ("" for ids without a token).
  std::vector<std::string> id_bytes;
  int32_t vocab_size = 0;
  std::optional<int32_t> bos;
  std::vector<int32_t> eos;

  void parse(const json& root);
  void parse_normalizer(const json& j, const std::string& where, int depth);
  void parse_pre_tokenizer(const json& j, const std::string& where, bool& have_byte_level, int depth);
  // Calls f(piece) for each piece BPE sees in `segment` (text between added tokens).
  template <typename F>
  void for_each_piece(std::string_view segment, F&& f) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
};

void BpeTokenizer::Impl::parse_normalizer(const json& j, const std::string& where, int depth) {
  if (j.is_null()) return;
  ANGELSLIM_CHECK(depth < kMaxNesting, FormatError, "{}: {}: Sequence nested deeper than {}", origin, where,
                  kMaxNesting);
  const std::string type = type_of(j);
  if (type == "NFC") {
    normalizers.push_back(UnicodeForm::kNfc);
  } else if (type == "NFKC") {
    normalizers.push_back(UnicodeForm::kNfkc);
  } else if (type == "Sequence") {
    ANGELSLIM_CHECK(j.contains("normalizers") && j["normalizers"].is_array(), FormatError,
                    "{}: {} is a Sequence without a \"normalizers\" array", origin, where);
    for (std::size_t i = 0; i < j["normalizers"].size(); ++i) {
      parse_normalizer(j["normalizers"][i], fmt::format("{}.normalizers[{}]", where, i), depth + 1);
    }
  } else {
    throw FormatError(
        fmt::format("{}: {} type \"{}\" is not supported (expected null, NFC, NFKC or Sequence)", origin, where, type));
  }
}

void BpeTokenizer::Impl::parse_pre_tokenizer(const json& j, const std::string& where, bool& have_byte_level,
                                             int depth) {
  ANGELSLIM_CHECK(depth < kMaxNesting, FormatError, "{}: {}: Sequence nested deeper than {}", origin, where,
                  kMaxNesting);
  const std::string type = type_of(j);
  if (type == "Sequence") {
    ANGELSLIM_CHECK(j.contains("pretokenizers") && j["pretokenizers"].is_array(), FormatError,
                    "{}: {} is a Sequence without a \"pretokenizers\" array", origin, where);
    for (std::size_t i = 0; i < j["pretokenizers"].size(); ++i) {
      parse_pre_tokenizer(j["pretokenizers"][i], fmt::format("{}.pretokenizers[{}]", where, i), have_byte_level,
                          depth + 1);
    }
    return;
  }
  if (type == "Split") {
    ANGELSLIM_CHECK(!have_byte_level, FormatError, "{}: {}: a Split after ByteLevel is not supported", origin, where);
    ANGELSLIM_CHECK(j.contains("pattern") && j["pattern"].is_object(), FormatError,
                    "{}: {}.pattern: expected {{\"Regex\": ...}} or {{\"String\": ...}}", origin, where);
    const json& pat = j["pattern"];
    bool literal = false;
    std::string pattern;
    if (pat.contains("Regex") && pat["Regex"].is_string()) {
      pattern = rewrite_whitespace_escapes(pat["Regex"].get<std::string>());
    } else if (pat.contains("String") && pat["String"].is_string()) {
      pattern = pat["String"].get<std::string>();
      literal = true;
    } else {
      throw FormatError(fmt::format("{}: {}.pattern: expected {{\"Regex\": string}} or {{\"String\": string}}, got {}",
                                    origin, where, pat.dump()));
    }
    ANGELSLIM_CHECK(j.contains("behavior") && j["behavior"].is_string(), FormatError,
                    "{}: {}.behavior: expected a string", origin, where);
    const std::string behavior = j["behavior"].get<std::string>();
    SplitBehavior b;
    if (behavior == "Isolated") {
      b = SplitBehavior::kIsolated;
    } else if (behavior == "Removed") {
      b = SplitBehavior::kRemoved;
    } else if (behavior == "MergedWithPrevious") {
      b = SplitBehavior::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      b = SplitBehavior::kMergedWithNext;
    } else if (behavior == "Contiguous") {
      b = SplitBehavior::kContiguous;
    } else {
      throw FormatError(
          fmt::format("{}: {}.behavior \"{}\" is not supported (expected Isolated, Removed, "
                      "MergedWithPrevious, MergedWithNext or Contiguous)",
                      origin, where, behavior));
    }
    const bool invert = get_bool(j, "invert", false, fmt::format("{}: {}", origin, where));
    splits.push_back(SplitStep{Pcre2Regex(pattern, literal, fmt::format("{} {}", origin, where)), b, invert});
    return;
  }
  if (type == "ByteLevel") {
    ANGELSLIM_CHECK(!have_byte_level, FormatError, "{}: {}: more than one ByteLevel step", origin, where);
    have_byte_level = true;
    const std::string w = fmt::format("{}: {}", origin, where);
    add_prefix_space = get_bool(j, "add_prefix_space", true, w);  // HF defaults: true, true
    if (get_bool(j, "use_regex", true, w)) {
      byte_level_regex.emplace(rewrite_whitespace_escapes(kGpt2Pattern), false, w);
    }
    return;
  }
  throw FormatError(
      fmt::format("{}: {} type \"{}\" is not supported (expected Sequence, Split or ByteLevel)", origin, where, type));
}

void BpeTokenizer::Impl::parse(const json& root) {
  ANGELSLIM_CHECK(root.is_object(), FormatError, "{}: expected a JSON object at the top level", origin);
  ANGELSLIM_CHECK(root.contains("model") && root["model"].is_object(), FormatError, "{}: missing the \"model\" object",
                  origin);
  const json& model = root["model"];
  if (model.contains("type")) {
    ANGELSLIM_CHECK(type_of(model) == "BPE", FormatError, "{}: model.type is {}, expected \"BPE\"", origin,
                    model["type"].dump());
  }
  ANGELSLIM_CHECK(model.contains("vocab") && model["vocab"].is_object(), FormatError,
                  "{}: missing the \"model.vocab\" object", origin);
  ANGELSLIM_CHECK(model.contains("merges") && model["merges"].is_array(), FormatError,
                  "{}: missing the \"model.merges\" array", origin);
  ANGELSLIM_CHECK(!get_bool(model, "byte_fallback", false, origin + ": model"), Unsupported,
                  "{}: model.byte_fallback true is not supported", origin);
  if (model.contains("dropout") && !model["dropout"].is_null()) {
    ANGELSLIM_CHECK(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0, Unsupported,
                    "{}: model.dropout {} is not supported (expected null)", origin, model["dropout"].dump());
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null()) {
      ANGELSLIM_CHECK(model[key].is_string() && model[key].get<std::string>().empty(), Unsupported,
                      "{}: model.{} {} is not supported (expected null)", origin, key, model[key].dump());
    }
  }
  fuse_unk = get_bool(model, "fuse_unk", false, origin + ": model");
  ignore_merges = get_bool(model, "ignore_merges", false, origin + ": model");

  // Vocabulary.
  int64_t max_id = -1;
  vocab.reserve(model["vocab"].size());
  for (const auto& [token, value] : model["vocab"].items()) {
    ANGELSLIM_CHECK(value.is_number_integer() && value.get<int64_t>() >= 0 && value.get<int64_t>() < kMaxTokenId,
                    FormatError, "{}: model.vocab[{}] = {}: expected an id in [0, {})", origin, json(token).dump(),
                    value.dump(), kMaxTokenId);
    const auto id = static_cast<int32_t>(value.get<int64_t>());
    vocab[token] = id;
    max_id = std::max<int64_t>(max_id, id);
  }
  ANGELSLIM_CHECK(!vocab.empty(), FormatError, "{}: model.vocab is empty", origin);

  // Added tokens.
  std::vector<std::pair<std::string, int32_t>> added;
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    const json& list = root["added_tokens"];
    ANGELSLIM_CHECK(list.is_array(), FormatError, "{}: added_tokens: expected an array", origin);
    for (std::size_t i = 0; i < list.size(); ++i) {
      const json& t = list[i];
      const std::string w = fmt::format("{}: added_tokens[{}]", origin, i);
      ANGELSLIM_CHECK(t.is_object() && t.contains("id") && t["id"].is_number_integer() && t.contains("content") &&
                          t["content"].is_string(),
                      FormatError, "{}: expected {{\"id\": int, \"content\": string, ...}}", w);
      const int64_t id = t["id"].get<int64_t>();
      ANGELSLIM_CHECK(id >= 0 && id < kMaxTokenId, FormatError, "{}: id {} outside [0, {})", w, id, kMaxTokenId);
      const std::string content = t["content"].get<std::string>();
      ANGELSLIM_CHECK(!content.empty(), FormatError, "{}: empty content", w);
      for (const char* key : {"single_word", "lstrip", "rstrip"}) {
        ANGELSLIM_CHECK(!get_bool(t, key, false, w), Unsupported, "{} ({}): {} true is not supported", w, content, key);
      }
      added.emplace_back(content, static_cast<int32_t>(id));
      added_by_content[content] = static_cast<int32_t>(id);
      max_id = std::max<int64_t>(max_id, id);
    }
  }
  added_matcher = LiteralMatcher(added);

  // Merges, in either spelling: "a b" (older files) or ["a", "b"] (tokenizers >= 0.20).
  const json& merges = model["merges"];
  ANGELSLIM_CHECK(merges.size() < static_cast<std::size_t>(kMaxTokenId), FormatError, "{}: model.merges has {} entries",
                  origin, merges.size());
  auto lookup = [&](const std::string& token, std::size_t i) {
    const auto it = vocab.find(token);
    ANGELSLIM_CHECK(it != vocab.end(), FormatError, "{}: model.merges[{}]: token {} is not in model.vocab", origin, i,
                    json(token).dump());
    return it->second;
  };
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const std::size_t space = s.find(' ');
      ANGELSLIM_CHECK(space != std::string::npos && space > 0 && space + 1 < s.size(), FormatError,
                      "{}: model.merges[{}] = {}: expected \"left right\"", origin, i, m.dump());
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      throw FormatError(fmt::format("{}: model.merges[{}] = {}: expected \"left right\" or [\"left\", \"right\"]",
                                    origin, i, m.dump()));
    }
    const int32_t left = lookup(a, i), right = lookup(b, i), merged = lookup(a + b, i);
    merger.add_pair(left, right, static_cast<int32_t>(i), merged);
  }

  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    ANGELSLIM_CHECK(model["unk_token"].is_string(), FormatError, "{}: model.unk_token: expected a string or null",
                    origin);
    const auto it = vocab.find(model["unk_token"].get<std::string>());
    ANGELSLIM_CHECK(it != vocab.end(), FormatError, "{}: model.unk_token {} is not in model.vocab", origin,
                    model["unk_token"].dump());
    unk_id = it->second;
  }

  const auto& alphabet = gpt2_byte_to_unicode();
  for (std::size_t b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(ch, alphabet[b]);
    const auto it = vocab.find(ch);
    byte_ids[b] = it == vocab.end() ? -1 : it->second;
  }

  if (root.contains("normalizer")) parse_normalizer(root["normalizer"], "normalizer", 0);
  ANGELSLIM_CHECK(root.contains("pre_tokenizer") && root["pre_tokenizer"].is_object(), FormatError,
                  "{}: missing the \"pre_tokenizer\" object (a byte-level BPE needs ByteLevel)", origin);
  bool have_byte_level = false;
  parse_pre_tokenizer(root["pre_tokenizer"], "pre_tokenizer", have_byte_level, 0);
  ANGELSLIM_CHECK(have_byte_level, FormatError,
                  "{}: pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)", origin);

  vocab_size = static_cast<int32_t>(max_id + 1);
  id_bytes.assign(static_cast<std::size_t>(vocab_size), std::string());
  for (const auto& [token, id] : vocab) {
    // HF's ByteLevel decoder keeps a token with a char outside the alphabet as its raw UTF-8.
    auto bytes = gpt2_decode_token(token);
    id_bytes[static_cast<std::size_t>(id)] = bytes ? std::move(*bytes) : token;
  }
  for (const auto& [content, id] : added) id_bytes[static_cast<std::size_t>(id)] = content;
  if (const auto it = added_by_content.find(std::string(kDefaultBos)); it != added_by_content.end()) bos = it->second;
}

void BpeTokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty() || cache.get(word, out)) return;
  std::vector<int32_t> symbols;
  if (ignore_merges) {
    if (const auto it = vocab.find(gpt2_encode_bytes(word)); it != vocab.end()) symbols.push_back(it->second);
  }
  if (symbols.empty()) {
    symbols.reserve(word.size());
    for (const char c : word) {
      const int32_t id = byte_ids[static_cast<unsigned char>(c)];
      if (id >= 0) {
        symbols.push_back(id);
      } else if (unk_id) {  // HF emits unk for a char missing from the vocabulary (fused if fuse_unk)
        if (!(fuse_unk && !symbols.empty() && symbols.back() == *unk_id)) symbols.push_back(*unk_id);
      }
    }
    merger.merge(symbols);
  }
  cache.put(word, symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

template <typename F>
void BpeTokenizer::Impl::for_each_piece(std::string_view segment, F&& f) const {
  if (segment.empty()) return;
  std::string normalized;
  std::string_view text = segment;
  if (!normalizers.empty()) {
    normalized = std::string(segment);
    for (const UnicodeForm form : normalizers) normalized = normalize_unicode(normalized, form);
    text = normalized;
  }
  std::vector<std::string_view> pieces{text}, next;
  std::vector<Range> scratch;
  for (const SplitStep& step : splits) {
    next.clear();
    for (const std::string_view piece : pieces) split_piece(step, piece, next, scratch);
    pieces.swap(next);
  }
  std::string prefixed;
  for (const std::string_view piece : pieces) {
    std::string_view p = piece;
    if (p.empty()) continue;
    if (add_prefix_space && p.front() != ' ') {
      prefixed = " " + std::string(p);
      p = prefixed;
    }
    if (byte_level_regex) {
      scratch.clear();
      byte_level_regex->find_all(p, scratch);
      std::size_t pos = 0;
      for (const auto& [b, e] : scratch) {  // Isolated: gaps are pieces too
        if (b > pos) f(p.substr(pos, b - pos));
        f(p.substr(b, e - b));
        pos = e;
      }
      if (pos < p.size()) f(p.substr(pos));
    } else {
      f(p);
    }
  }
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_file(const std::filesystem::path& path) {
  return from_json(read_tokenizer_file(path), path.string());
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_json(std::string_view json_text, const std::string& origin) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: not valid JSON: {}", origin, e.what()));
  }
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;
  try {
    impl->parse(root);
  } catch (const json::exception& e) {  // a field of an unexpected JSON type that slipped past the checks
    throw FormatError(fmt::format("{}: unexpected content: {}", origin, e.what()));
  }
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(impl)));
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  check_utf8(text, impl_->origin + ": encode");
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  const auto encode_word = [&](std::string_view word) { impl_->encode_word(word, out); };
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto m = impl_->added_matcher.find(text, pos);
    if (!m) break;
    impl_->for_each_piece(text.substr(pos, m->start - pos), encode_word);
    out.push_back(m->id);
    pos = m->start + m->length;
  }
  impl_->for_each_piece(text.substr(pos), encode_word);
  return out;
}

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view text) const {
  check_utf8(text, impl_->origin + ": pre_tokenize");
  std::vector<std::string> pieces;
  impl_->for_each_piece(text, [&](std::string_view piece) { pieces.emplace_back(piece); });
  return pieces;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (const int32_t id : ids) {
    ANGELSLIM_CHECK(id >= 0 && id < impl_->vocab_size, InvalidInput, "{}: decode: id {} outside [0, {})", impl_->origin,
                    id, impl_->vocab_size);
    out += impl_->id_bytes[static_cast<std::size_t>(id)];
  }
  return out;
}

int32_t BpeTokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> BpeTokenizer::special_id(std::string_view content) const {
  const auto it = impl_->added_by_content.find(std::string(content));
  if (it == impl_->added_by_content.end()) return std::nullopt;
  return it->second;
}

int32_t BpeTokenizer::bos_id() const {
  ANGELSLIM_CHECK(impl_->bos.has_value(), InvalidInput, "{}: no BOS token (no {} added token, no bos_token set)",
                  impl_->origin, kDefaultBos);
  return *impl_->bos;
}

std::vector<int32_t> BpeTokenizer::eos_ids() const { return impl_->eos; }

void BpeTokenizer::set_bos_id(int32_t id) {
  ANGELSLIM_CHECK(id >= 0 && id < impl_->vocab_size, InvalidInput, "{}: BOS id {} outside [0, {})", impl_->origin, id,
                  impl_->vocab_size);
  impl_->bos = id;
}

void BpeTokenizer::set_eos_ids(std::vector<int32_t> ids) {
  for (const int32_t id : ids) {
    ANGELSLIM_CHECK(id >= 0 && id < impl_->vocab_size, InvalidInput, "{}: EOS id {} outside [0, {})", impl_->origin, id,
                    impl_->vocab_size);
  }
  impl_->eos = std::move(ids);
}

}  // namespace angelslim
