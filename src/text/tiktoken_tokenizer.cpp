// hy.tiktoken tokenizer (SPEC 1.6.2), following tiktoken's CoreBPE: NFC, split on specials, the A13B
// regex, then per piece: the piece's own rank if it is a token, else byte-level BPE by rank.
#include "angelslim/text/tiktoken_tokenizer.h"

#include <array>
#include <optional>
#include <unordered_map>
#include <utility>

#include "angelslim/core/error.h"
#include "text/bpe_merge.h"
#include "text/pcre_regex.h"
#include "text/tokenizer_util.h"

namespace angelslim {
namespace {

constexpr std::string_view kDefaultBos = "<|startoftext|>";

std::vector<std::string> special_names() {
  std::vector<std::string> names = {"<|endoftext|>", "<|startoftext|>", "<|bos|>", "<|eos|>", "<|pad|>"};
  for (int i = 0; names.size() < static_cast<std::size_t>(TiktokenTokenizer::kNumSpecials); ++i) {
    names.push_back(fmt::format("<|extra_{}|>", i));
  }
  return names;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard alphabet with padding; nullopt unless the length is a multiple of 4 and '=' appears
// only as the last one or two characters.
std::optional<std::string> decode_base64(std::string_view s) {
  if (s.empty() || s.size() % 4 != 0) return std::nullopt;
  std::size_t pad = 0;
  if (s.back() == '=') pad = s[s.size() - 2] == '=' ? 2 : 1;
  std::string out;
  out.reserve(s.size() / 4 * 3);
  for (std::size_t i = 0; i < s.size(); i += 4) {
    uint32_t v = 0;
    const bool last = i + 4 == s.size();
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = s[i + k];
      int d = 0;
      if (last && k >= 4 - pad) {
        if (c != '=') return std::nullopt;
      } else {
        d = base64_value(c);
        if (d < 0) return std::nullopt;
      }
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    const std::size_t n = last ? 3 - pad : 3;
    for (std::size_t k = 0; k < n; ++k) out.push_back(static_cast<char>((v >> (16 - 8 * k)) & 0xFF));
  }
  return out;
}

}  // namespace

struct TiktokenTokenizer::Impl {
  std::string origin;
  std::vector<std::string> token_bytes;                   // rank -> bytes
  std::unordered_map<std::string_view, int32_t> rank_of;  // views into token_bytes
  std::array<int32_t, 256> byte_rank{};
  BpeMerger merger;
  WordCache cache;
  std::vector<std::string> specials;
  std::unordered_map<std::string, int32_t> special_by_content;
  LiteralMatcher special_matcher;
  std::optional<Pcre2Regex> regex;
  int32_t n_ranks = 0;
  std::optional<int32_t> bos;
  std::vector<int32_t> eos;

  void parse(std::string_view content);
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
};

void TiktokenTokenizer::Impl::parse(std::string_view content) {
  std::size_t pos = 0;
  std::size_t line_no = 0;  // 1-based in messages; rank == line_no - 1
  while (pos < content.size()) {
    std::size_t eol = content.find('\n', pos);
    if (eol == std::string_view::npos) eol = content.size();
    std::string_view line = content.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::size_t space = line.find(' ');
    ANGELSLIM_CHECK(space != std::string_view::npos, FormatError,
                    "{}: line {}: expected \"<base64 token bytes> <rank>\", got \"{}\"", origin, line_no,
                    line.substr(0, 80));
    const std::string_view b64 = line.substr(0, space);
    const std::string_view rank_text = line.substr(space + 1);
    auto bytes = decode_base64(b64);
    ANGELSLIM_CHECK(bytes.has_value(), FormatError, "{}: line {}: bad base64 \"{}\"", origin, line_no,
                    b64.substr(0, 80));
    int64_t rank = 0;
    bool rank_ok = !rank_text.empty() && rank_text.size() <= 10;
    for (const char c : rank_text) {
      if (c < '0' || c > '9') rank_ok = false;
      if (rank_ok) rank = rank * 10 + (c - '0');
    }
    ANGELSLIM_CHECK(rank_ok, FormatError, "{}: line {}: rank \"{}\" is not a non-negative integer", origin, line_no,
                    rank_text.substr(0, 80));
    ANGELSLIM_CHECK(rank == static_cast<int64_t>(line_no - 1), FormatError,
                    "{}: line {}: rank {} differs from the 0-based line index {}", origin, line_no, rank, line_no - 1);
    ANGELSLIM_CHECK(rank < (int64_t{1} << 24), FormatError, "{}: line {}: too many tokens", origin, line_no);
    token_bytes.push_back(std::move(*bytes));
  }
  ANGELSLIM_CHECK(!token_bytes.empty(), FormatError, "{}: no tokens", origin);
  n_ranks = static_cast<int32_t>(token_bytes.size());

  rank_of.reserve(token_bytes.size());
  for (int32_t r = 0; r < n_ranks; ++r) {
    const auto [it, inserted] = rank_of.emplace(token_bytes[static_cast<std::size_t>(r)], r);
    ANGELSLIM_CHECK(inserted, FormatError, "{}: line {}: token bytes repeat line {}", origin, r + 1, it->second + 1);
  }
  for (std::size_t b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    const auto it = rank_of.find(std::string_view(&c, 1));
    ANGELSLIM_CHECK(it != rank_of.end(), FormatError, "{}: the single byte 0x{:02X} has no token", origin, b);
    byte_rank[b] = it->second;
  }
  // Every split of a token into two tokens is a merge producing it, with the token's rank: this is
  // tiktoken's "merge the adjacent pair whose concatenation has the lowest rank".
  for (int32_t r = 0; r < n_ranks; ++r) {
    const std::string_view t = token_bytes[static_cast<std::size_t>(r)];
    for (std::size_t k = 1; k < t.size(); ++k) {
      const auto left = rank_of.find(t.substr(0, k));
      if (left == rank_of.end()) continue;
      const auto right = rank_of.find(t.substr(k));
      if (right == rank_of.end()) continue;
      merger.add_pair(left->second, right->second, r, r);
    }
  }

  specials = special_names();
  std::vector<std::pair<std::string, int32_t>> literals;
  for (std::size_t i = 0; i < specials.size(); ++i) {
    const int32_t id = n_ranks + static_cast<int32_t>(i);
    literals.emplace_back(specials[i], id);
    special_by_content[specials[i]] = id;
  }
  special_matcher = LiteralMatcher(literals);
  regex.emplace(rewrite_whitespace_escapes(TiktokenTokenizer::kPattern), false, origin + " pre-tokenizer regex");
  bos = special_by_content.at(std::string(kDefaultBos));
}

void TiktokenTokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (const auto it = rank_of.find(piece); it != rank_of.end()) {
    out.push_back(it->second);
    return;
  }
  if (cache.get(piece, out)) return;
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  for (const char c : piece) symbols.push_back(byte_rank[static_cast<unsigned char>(c)]);
  merger.merge(symbols);
  cache.put(piece, symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

TiktokenTokenizer::TiktokenTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TiktokenTokenizer::~TiktokenTokenizer() = default;

std::unique_ptr<TiktokenTokenizer> TiktokenTokenizer::from_file(const std::filesystem::path& path) {
  return from_text(read_tokenizer_file(path), path.string());
}

std::unique_ptr<TiktokenTokenizer> TiktokenTokenizer::from_text(std::string_view content, const std::string& origin) {
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;
  impl->parse(content);
  return std::unique_ptr<TiktokenTokenizer>(new TiktokenTokenizer(std::move(impl)));
}

std::vector<int32_t> TiktokenTokenizer::encode(std::string_view input) const {
  check_utf8(input, impl_->origin + ": encode");
  const std::string text = normalize_unicode(input, UnicodeForm::kNfc);
  const std::string_view view = text;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  std::vector<std::pair<std::size_t, std::size_t>> matches;
  auto encode_span = [&](std::string_view span) {
    if (span.empty()) return;
    matches.clear();
    impl_->regex->find_all(span, matches);
    // Like tiktoken, only regex matches are encoded (the A13B pattern matches every character).
    for (const auto& [b, e] : matches) impl_->encode_piece(span.substr(b, e - b), out);
  };
  std::size_t pos = 0;
  while (pos < view.size()) {
    const auto m = impl_->special_matcher.find(view, pos);
    if (!m) break;
    encode_span(view.substr(pos, m->start - pos));
    out.push_back(m->id);
    pos = m->start + m->length;
  }
  encode_span(view.substr(pos));
  return out;
}

std::string TiktokenTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (const int32_t id : ids) {
    ANGELSLIM_CHECK(id >= 0 && id < vocab_size(), InvalidInput, "{}: decode: id {} outside [0, {})", impl_->origin, id,
                    vocab_size());
    out += id < impl_->n_ranks ? impl_->token_bytes[static_cast<std::size_t>(id)]
                               : impl_->specials[static_cast<std::size_t>(id - impl_->n_ranks)];
  }
  return out;
}

int32_t TiktokenTokenizer::vocab_size() const { return impl_->n_ranks + kNumSpecials; }

std::optional<int32_t> TiktokenTokenizer::special_id(std::string_view content) const {
  const auto it = impl_->special_by_content.find(std::string(content));
  if (it == impl_->special_by_content.end()) return std::nullopt;
  return it->second;
}

int32_t TiktokenTokenizer::bos_id() const { return *impl_->bos; }

std::vector<int32_t> TiktokenTokenizer::eos_ids() const { return impl_->eos; }

void TiktokenTokenizer::set_bos_id(int32_t id) {
  ANGELSLIM_CHECK(id >= 0 && id < vocab_size(), InvalidInput, "{}: BOS id {} outside [0, {})", impl_->origin, id,
                  vocab_size());
  impl_->bos = id;
}

void TiktokenTokenizer::set_eos_ids(std::vector<int32_t> ids) {
  for (const int32_t id : ids) {
    ANGELSLIM_CHECK(id >= 0 && id < vocab_size(), InvalidInput, "{}: EOS id {} outside [0, {})", impl_->origin, id,
                    vocab_size());
  }
  impl_->eos = std::move(ids);
}

}  // namespace angelslim
