// Tokenizer tests (SPEC 1.6.1, 1.6.2, 1.7.2): goldens made with HF tokenizers / tiktoken, the held-out
// reference ids, chat calibration samples, split behaviours from the HF docs, and malformed files.
#include "angelslim/text/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "angelslim/core/error.h"
#include "angelslim/text/bpe_tokenizer.h"
#include "angelslim/text/tiktoken_tokenizer.h"
#include "text/bpe_merge.h"
#include "text/tokenizer_util.h"

namespace angelslim {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kData = ANGELSLIM_TEST_DATA;
const fs::path kFixtureDir = kData / "fixtures" / "hy-dense-tiny";
const fs::path kA13bDir = kData / "tokenizers" / "hy-a13b";

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  EXPECT_TRUE(in.good()) << p;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const fs::path& p, std::string_view data) {
  std::ofstream out(p, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

const json& goldens() {
  static const json j = json::parse(read_all(kData / "tokenizers" / "tokenizer_goldens.json"));
  return j;
}

const BpeTokenizer& fixture_tokenizer() {
  static const auto tok = BpeTokenizer::from_file(kFixtureDir / "tokenizer.json");
  return *tok;
}

const TiktokenTokenizer& a13b_tokenizer() {
  static const auto tok = TiktokenTokenizer::from_file(kA13bDir / "hy.tiktoken");
  return *tok;
}

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

// A fresh temporary directory per test, removed at the end.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ =
        fs::temp_directory_path() / ("angelslim_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Runs `f`, expects a FormatError whose message contains every string of `needles`.
template <typename F>
void expect_format_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no FormatError thrown";
  } catch (const FormatError& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what() << " lacks " << n;
  }
}

std::size_t count_code_points(std::string_view s) {
  std::size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

std::string first_code_points(std::string_view s, std::size_t n) {
  std::size_t i = 0, seen = 0;
  while (i < s.size()) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (seen == n) break;
      ++seen;
    }
    ++i;
  }
  return std::string(s.substr(0, i));
}

// ---------------------------------------------------------------- tokenizer.json fixture

TEST(BpeTokenizer, FixtureGoldensMatchIdForIdAndRoundTrip) {
  const auto& tok = fixture_tokenizer();
  const json& cases = goldens()["tokenizer_json_fixture"];
  ASSERT_GE(cases.size(), 10u);
  for (const json& c : cases) {
    const std::string text = c["text"];
    const auto ids = tok.encode(text);
    EXPECT_EQ(ids, ids_of(c["ids"])) << text;
    EXPECT_EQ(tok.decode(ids), text);
  }
}

TEST(BpeTokenizer, FixtureVocabAndSpecials) {
  const auto& tok = fixture_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 16384);
  EXPECT_EQ(tok.special_id("<｜hy_begin▁of▁sentence｜>"), 16374);
  EXPECT_EQ(tok.special_id("<｜hy_User｜>"), 16377);
  EXPECT_EQ(tok.special_id("<｜hy_place▁holder▁no▁2｜>"), 16379);
  EXPECT_EQ(tok.special_id("not a token"), std::nullopt);
  EXPECT_EQ(tok.bos_id(), 16374);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{16384}), InvalidInput);
  EXPECT_THROW(tok.encode(std::string("bad \xC3\x28 utf8")), InvalidInput);
}

// SPEC 1.6.1 step 3 on a hand-worked string: \p{N}{1,3} runs, CJK runs, then the third regex.
TEST(BpeTokenizer, FixturePreTokenizerPieces) {
  const auto pieces = fixture_tokenizer().pre_tokenize("abc12345 中文x  y\n\n");
  const std::vector<std::string> want = {"abc", "123", "45", " ", "中文", "x", " ", " y", "\n\n"};
  EXPECT_EQ(pieces, want);
}

TEST(BpeTokenizer, HeldoutMatchesReferenceIds) {
  const std::string text = read_all(kData / "eval" / "heldout.txt");
  const std::string bin = read_all(kData / "eval" / "heldout.hy-tiny.ids.bin");
  ASSERT_EQ(bin.size() % 4, 0u);
  std::vector<int32_t> want(bin.size() / 4);
  for (std::size_t i = 0; i < want.size(); ++i) {  // int32 little-endian
    const auto* p = reinterpret_cast<const unsigned char*>(bin.data() + 4 * i);
    want[i] = static_cast<int32_t>(uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24);
  }
  ASSERT_FALSE(want.empty());
  // The reference holds encode(text) with no BOS prepended.
  EXPECT_NE(want.front(), 16374);
  // A fresh tokenizer so the word cache starts cold.
  const auto tok = BpeTokenizer::from_file(kFixtureDir / "tokenizer.json");
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok->encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(ids.size(), want.size());
  std::size_t first_diff = ids.size();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] != want[i]) {
      first_diff = i;
      break;
    }
  }
  EXPECT_EQ(first_diff, ids.size()) << "first differing id at index " << first_diff;
  EXPECT_EQ(tok->decode(ids), text);
  std::printf("heldout: %zu bytes -> %zu ids in %.3f s\n", text.size(), ids.size(), seconds);
}

// The dense-family chat rendering of a ShareGPT record (SPEC 1.6.3), enough for the golden lines.
std::string render_dense(const json& record) {
  std::string s = "<｜hy_begin▁of▁sentence｜>";
  for (const json& turn : record["conversations"]) {
    const std::string from = turn["from"];
    const std::string value = turn["value"];
    if (value.empty()) continue;
    if (from.find("human") != std::string::npos) {
      s += "<｜hy_User｜>" + value;
    } else if (from.find("gpt") != std::string::npos) {
      s += "<｜hy_Assistant｜>" + value + "<｜hy_place▁holder▁no▁2｜>";
    } else if (from == "system") {
      s += value + "<｜hy_place▁holder▁no▁3｜>";
    }
  }
  return s;
}

TEST(BpeTokenizer, ChatCalibrationSamples) {
  const auto& tok = fixture_tokenizer();
  std::vector<std::string> lines;
  {
    std::ifstream in(kData / "calib" / "sharegpt_gpt4_256.jsonl");
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  // Rule for truncated samples: encode(first 2000 chars) must equal ids_first_512 on its first
  // min(512, n_prefix - 8) ids. Only the last pre-tokenizer piece can be cut short by the 2000-char
  // boundary; 8 ids covers one such piece (observed: only the very last id differs).
  constexpr std::size_t kTailSlack = 8;
  const json& samples = goldens()["chat_calibration_samples"];
  ASSERT_EQ(samples.size(), 8u);
  for (const json& s : samples) {
    const std::string rendered = s["rendered"];
    const auto rendered_len = s["rendered_len"].get<std::size_t>();
    const auto n_ids = s["n_ids"].get<std::size_t>();
    const auto want = ids_of(s["ids_first_512"]);
    SCOPED_TRACE("line " + s["line"].dump());
    if (rendered_len <= 2000) {
      ASSERT_EQ(count_code_points(rendered), rendered_len);
      const auto ids = tok.encode(rendered);
      EXPECT_EQ(ids.size(), n_ids);
      EXPECT_EQ(ids, want);
    } else {
      const auto ids = tok.encode(rendered);
      const std::size_t n = std::min<std::size_t>(want.size(), ids.size() - kTailSlack);
      ASSERT_GE(n, 400u);
      EXPECT_TRUE(std::equal(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), want.begin()));
    }
    // Stronger: re-render the whole conversation, check it against the golden prefix/length and
    // compare n_ids and all of ids_first_512 exactly.
    const std::size_t line = s["line"].get<std::size_t>();
    ASSERT_LT(line, lines.size());
    const std::string full = render_dense(json::parse(lines[line]));
    ASSERT_EQ(count_code_points(full), rendered_len);
    ASSERT_EQ(first_code_points(full, 2000), rendered);
    const auto ids = tok.encode(full);
    EXPECT_EQ(ids.size(), n_ids);
    ASSERT_GE(ids.size(), want.size());
    EXPECT_TRUE(std::equal(want.begin(), want.end(), ids.begin()));
    EXPECT_EQ(tok.decode(ids), full);
  }
}

// HF docs, SplitDelimiterBehavior on "the-final--countdown" split by "-".
TEST(BpeTokenizer, SplitBehavioursFollowHfDocs) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"Removed", {"the", "final", "countdown"}},
      {"Isolated", {"the", "-", "final", "-", "-", "countdown"}},
      {"MergedWithPrevious", {"the-", "final-", "-", "countdown"}},
      {"MergedWithNext", {"the", "-final", "-", "-countdown"}},
      {"Contiguous", {"the", "-", "final", "--", "countdown"}},
  };
  json vocab = json::object();
  const auto& alphabet = gpt2_byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(ch, alphabet[static_cast<std::size_t>(b)]);
    vocab[ch] = b;
  }
  for (const auto& [behavior, want] : cases) {
    for (const bool literal : {true, false}) {
      json pattern = literal ? json{{"String", "-"}} : json{{"Regex", "\\-"}};
      const json tj = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
                       {"pre_tokenizer",
                        {{"type", "Sequence"},
                         {"pretokenizers",
                          {{{"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", false}},
                           {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}}};
      const auto tok = BpeTokenizer::from_json(tj.dump(), "split-test");
      EXPECT_EQ(tok->pre_tokenize("the-final--countdown"), want) << behavior;
      // With no merges every byte is its own id; Removed drops the dashes.
      std::string joined;
      for (const auto& p : want) joined += p;
      EXPECT_EQ(tok->decode(tok->encode("the-final--countdown")), joined);
    }
  }
}

// GPT-2 ByteLevel with use_regex and add_prefix_space, plus merges in the legacy "a b" spelling.
TEST(BpeTokenizer, ByteLevelRegexPrefixSpaceAndStringMerges) {
  json vocab = json::object();
  const auto& alphabet = gpt2_byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(ch, alphabet[static_cast<std::size_t>(b)]);
    vocab[ch] = b;
  }
  vocab["Ġh"] = 256;
  vocab["Ġhi"] = 257;
  vocab["ll"] = 258;
  const json tj = {{"added_tokens", {{{"id", 300}, {"content", "<x>"}, {"special", true}}}},
                   {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"Ġ h", "Ġh i", "l l"}}}},
                   {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}}}}},
                   {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}}};
  const auto tok = BpeTokenizer::from_json(tj.dump(), "bytelevel-test");
  EXPECT_EQ(tok->vocab_size(), 301);
  EXPECT_THROW(tok->bos_id(), InvalidInput);  // no <｜hy_begin▁of▁sentence｜> and none set
  EXPECT_EQ(tok->special_id("<x>"), 300);
  const std::vector<std::string> pieces_want = {" hi", "'s", " all", "!!"};
  EXPECT_EQ(tok->pre_tokenize("hi's all!!"), pieces_want);
  // " hi" -> Ġhi; "'s" -> ' s; " all" -> Ġ a ll; "!!" -> ! !; fullwidth Ａ -> NFKC A -> " A".
  const auto ids = tok->encode("hi's all!!<x>");
  const std::vector<int32_t> expect = {257, '\'', 's', vocab["Ġ"].get<int32_t>(), 'a', 258, '!', '!', 300};
  EXPECT_EQ(ids, expect);
  EXPECT_EQ(tok->encode("Ａ"), (std::vector<int32_t>{vocab["Ġ"].get<int32_t>(), 'A'}));
}

// ---------------------------------------------------------------- BPE merge engine

// The heap merge and the quadratic rescan are independent implementations of "lowest rank first,
// leftmost first"; they must agree on random merge tables and words (including long runs).
TEST(BpeMerger, HeapAgreesWithQuadraticRescan) {
  std::mt19937 rng(1234);
  for (int table = 0; table < 20; ++table) {
    BpeMerger merger;
    int32_t next_id = 4;  // alphabet 0..3
    for (int32_t rank = 0; rank < 60; ++rank) {
      std::uniform_int_distribution<int32_t> pick(0, next_id - 1);
      const int32_t a = pick(rng), b = pick(rng);
      if (merger.find(a, b) != nullptr) continue;
      merger.add_pair(a, b, rank, next_id++);
    }
    for (int word = 0; word < 200; ++word) {
      std::uniform_int_distribution<int> len_dist(0, 120);
      std::uniform_int_distribution<int32_t> sym(0, 3);
      std::vector<int32_t> w(static_cast<std::size_t>(len_dist(rng)));
      for (auto& s : w) s = sym(rng);
      auto h = w, q = w;
      merger.merge_heap(h);
      merger.merge_quadratic(q);
      ASSERT_EQ(h, q);
    }
  }
}

TEST(BpeMerger, HandWorkedExample) {
  // Merges: (a,a)->A rank 0, (A,a)->B rank 1. "aaaaa": leftmost (a,a) pairs first: A A a, then
  // (A,a) at position 1 -> A B.
  BpeMerger m;
  m.add_pair(0, 0, 0, 10);
  m.add_pair(10, 0, 1, 11);
  std::vector<int32_t> w = {0, 0, 0, 0, 0};
  m.merge_heap(w);
  EXPECT_EQ(w, (std::vector<int32_t>{10, 11}));
}

// ---------------------------------------------------------------- hy.tiktoken

TEST(TiktokenTokenizer, GoldensMatchIdForIdAndRoundTrip) {
  const auto& tok = a13b_tokenizer();
  const json& g = goldens()["hy_tiktoken"];
  EXPECT_EQ(std::string(TiktokenTokenizer::kPattern), g["pattern"].get<std::string>());
  EXPECT_EQ(tok.vocab_size(), g["vocab"].get<int32_t>());
  EXPECT_EQ(tok.special_id("<|endoftext|>"), g["special_start"].get<int32_t>());
  const json& cases = g["cases"];
  ASSERT_GE(cases.size(), 10u);
  for (const json& c : cases) {
    const std::string text = c["text"];
    const auto ids = tok.encode(text);
    EXPECT_EQ(ids, ids_of(c["ids"])) << text;
    const std::string nfc = normalize_unicode(text, UnicodeForm::kNfc);
    EXPECT_EQ(tok.decode(ids), nfc) << text;
  }
}

TEST(TiktokenTokenizer, SpecIdsAndGoldens) {
  const auto& tok = a13b_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 128167);
  EXPECT_EQ(tok.special_id("<|startoftext|>"), 127958);
  EXPECT_EQ(tok.special_id("<|eos|>"), 127960);
  EXPECT_EQ(tok.special_id("<|pad|>"), 127961);
  EXPECT_EQ(tok.special_id("<|extra_0|>"), 127962);
  EXPECT_EQ(tok.special_id("<|extra_204|>"), 128166);
  EXPECT_EQ(tok.special_id("<|extra_205|>"), std::nullopt);
  EXPECT_EQ(tok.bos_id(), 127958);
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<int32_t>{9906, 1917}));
  EXPECT_EQ(tok.encode("<|startoftext|>You are helpful.<|extra_4|>Hi<|extra_0|>"),
            (std::vector<int32_t>{127958, 2675, 527, 11190, 13, 127966, 13347, 127962}));
  // NFC of the whole text: "e" + U+0301 encodes as the precomposed "é".
  EXPECT_EQ(tok.encode("Caf\x65\xCC\x81"), tok.encode("Caf\xC3\xA9"));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{127960}), "<|eos|>");
  EXPECT_THROW(tok.decode(std::vector<int32_t>{128167}), InvalidInput);
  EXPECT_THROW(tok.encode(std::string("\xFF")), InvalidInput);
}

// ---------------------------------------------------------------- round trips and robustness

// Random text over a pool of code points that stress the regexes (digits, CJK, combining marks,
// U+0085 / U+3000 whitespace, emoji, CR/LF, fragments of specials): decode(encode(s)) must give s
// back (NFC(s) for tiktoken, which normalizes first).
std::string random_text(std::mt19937& rng, std::size_t n_chars) {
  static const std::vector<char32_t> kPool = {'a',    'Z',    'q',     ' ',     ' ',    '\t',   '\n',   '\r',   '0',
                                              '7',    '\'',   '-',     '.',     '!',    '<',    '|',    '>',    0x85,
                                              0xA0,   0xE9,   0x301,   0x308,   0x3000, 0x4E2D, 0x6587, 0x3042, 0x30AB,
                                              0xFF5C, 0x2581, 0x1F642, 0x1F3FD, 0x2122, 0x221A, 0x0663, 0xFF21, 0x200B};
  std::uniform_int_distribution<std::size_t> pick(0, kPool.size() - 1);
  std::string s;
  for (std::size_t i = 0; i < n_chars; ++i) append_utf8(s, kPool[pick(rng)]);
  return s;
}

TEST(TokenizerRoundTrip, RandomTextBothFamilies) {
  std::mt19937 rng(7);
  const auto& bpe = fixture_tokenizer();
  const auto& tik = a13b_tokenizer();
  for (int i = 0; i < 300; ++i) {
    std::string s = random_text(rng, static_cast<std::size_t>(i % 60));
    if (i % 10 == 0) s += "<｜hy_User｜>" + random_text(rng, 5) + "<|extra_0|>";
    const auto a = bpe.encode(s);
    for (const int32_t id : a) ASSERT_TRUE(id >= 0 && id < bpe.vocab_size());
    EXPECT_EQ(bpe.decode(a), s);
    const auto b = tik.encode(s);
    for (const int32_t id : b) ASSERT_TRUE(id >= 0 && id < tik.vocab_size());
    EXPECT_EQ(tik.decode(b), normalize_unicode(s, UnicodeForm::kNfc));
  }
}

TEST(TokenizerRoundTrip, ArbitraryBytesNeverCrash) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 300; ++i) {
    std::string s(static_cast<std::size_t>(i % 40), '\0');
    for (auto& c : s) c = static_cast<char>(byte(rng));
    const bool valid = !find_invalid_utf8(s).has_value();
    for (const Tokenizer* tok :
         {static_cast<const Tokenizer*>(&fixture_tokenizer()), static_cast<const Tokenizer*>(&a13b_tokenizer())}) {
      if (valid) {
        EXPECT_FALSE(tok->encode(s).empty() && !s.empty());
      } else {
        EXPECT_THROW(tok->encode(s), InvalidInput);
      }
    }
  }
}

// ---------------------------------------------------------------- Tokenizer::load

TEST(TokenizerLoad, DenseFixtureDirectory) {
  const auto tok = Tokenizer::load(kFixtureDir);
  EXPECT_EQ(tok->vocab_size(), 16384);
  EXPECT_EQ(tok->bos_id(), 16374);                           // tokenizer_config bos_token
  EXPECT_EQ(tok->eos_ids(), (std::vector<int32_t>{16379}));  // eos_token == generation_config id
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int32_t>{39, 1179, 78, 711}));
}

TEST(TokenizerLoad, A13bDirectory) {
  const auto tok = Tokenizer::load(kA13bDir);
  EXPECT_EQ(tok->vocab_size(), 128167);
  EXPECT_EQ(tok->bos_id(), 127958);  // no bos_token in the config: <|startoftext|>
  EXPECT_EQ(tok->eos_ids(), (std::vector<int32_t>{127960, 127967}));
}

TEST(TokenizerLoad, ConfigOverridesAndMissingFiles) {
  TempDir dir;
  EXPECT_THROW(Tokenizer::load(dir.path()), InvalidInput);
  EXPECT_THROW(Tokenizer::load(dir.path() / "nope"), InvalidInput);
  fs::copy_file(kFixtureDir / "tokenizer.json", dir.path() / "tokenizer.json");
  {
    const auto tok = Tokenizer::load(dir.path());  // no configs: family defaults
    EXPECT_EQ(tok->bos_id(), 16374);
    EXPECT_TRUE(tok->eos_ids().empty());
  }
  write_all(dir.path() / "tokenizer_config.json",
            R"({"bos_token": {"content": "<｜hy_User｜>"}, "eos_token": "<｜hy_place▁holder▁no▁3｜>"})");
  write_all(dir.path() / "generation_config.json", R"({"eos_token_id": [16379, 16380]})");
  {
    const auto tok = Tokenizer::load(dir.path());
    EXPECT_EQ(tok->bos_id(), 16377);
    EXPECT_EQ(tok->eos_ids(), (std::vector<int32_t>{16380, 16379}));
  }
  write_all(dir.path() / "generation_config.json", R"({"eos_token_id": 99999})");
  expect_format_error([&] { Tokenizer::load(dir.path()); }, {"generation_config.json", "eos_token_id"});
  write_all(dir.path() / "tokenizer_config.json", R"({"bos_token": "<nope>"})");
  expect_format_error([&] { Tokenizer::load(dir.path()); }, {"tokenizer_config.json", "bos_token"});
  write_all(dir.path() / "tokenizer_config.json", "{not json");
  expect_format_error([&] { Tokenizer::load(dir.path()); }, {"tokenizer_config.json", "JSON"});
}

// ---------------------------------------------------------------- malformed files

TEST(TokenizerErrors, MalformedTokenizerJson) {
  TempDir dir;
  const std::string good = read_all(kFixtureDir / "tokenizer.json");
  const fs::path path = dir.path() / "tokenizer.json";
  // Truncated at several points: never a crash, always a FormatError naming the file.
  for (const std::size_t cut : {std::size_t{0}, std::size_t{1}, good.size() / 7, good.size() / 2, good.size() - 2}) {
    write_all(path, std::string_view(good).substr(0, cut));
    expect_format_error([&] { BpeTokenizer::from_file(path); }, {path.string(), "JSON"});
  }
  json j = json::parse(good);
  auto expect_bad = [&](const json& doc, const std::vector<std::string>& needles) {
    write_all(path, doc.dump());
    auto all = needles;
    all.push_back(path.string());
    expect_format_error([&] { BpeTokenizer::from_file(path); }, all);
  };
  {
    json d = j;
    d.erase("model");
    expect_bad(d, {"model"});
  }
  {
    json d = j;
    d["model"].erase("vocab");
    expect_bad(d, {"model.vocab"});
  }
  {
    json d = j;
    d["model"].erase("merges");
    expect_bad(d, {"model.merges"});
  }
  {
    json d = j;
    d["model"]["merges"][5] = json::array({"Ġt", "zzzunknown"});
    expect_bad(d, {"model.merges[5]", "zzzunknown"});
  }
  {
    json d = j;
    d["model"]["merges"][3] = 42;
    expect_bad(d, {"model.merges[3]"});
  }
  {
    json d = j;
    d["normalizer"] = {{"type", "Lowercase"}};
    expect_bad(d, {"normalizer", "Lowercase"});
  }
  {
    json d = j;
    d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
    expect_bad(d, {"Sideways"});
  }
  {
    json d = j;
    d["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(unclosed"}};
    expect_bad(d, {"regex"});
  }
  {
    json d = j;
    d["model"]["vocab"]["Ġthe"] = -3;
    expect_bad(d, {"model.vocab"});
  }
  {
    json d = j;
    d["added_tokens"][0]["id"] = "x";
    expect_bad(d, {"added_tokens[0]"});
  }
  {
    json d = j;
    json nested = {{"type", "NFC"}};
    for (int i = 0; i < 40; ++i) nested = {{"type", "Sequence"}, {"normalizers", {nested}}};
    d["normalizer"] = nested;
    expect_bad(d, {"normalizer", "nested"});
  }
}

std::string b64(std::string_view bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = 0;
    const std::size_t n = std::min<std::size_t>(3, bytes.size() - i);
    for (std::size_t k = 0; k < 3; ++k) v = (v << 8) | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
    for (std::size_t k = 0; k < 4; ++k) out.push_back(k <= n ? kAlphabet[(v >> (18 - 6 * k)) & 63] : '=');
  }
  return out;
}

// A small valid hy.tiktoken: the 256 single bytes, then "ab", "abc", "ca".
std::string tiny_tiktoken() {
  std::string out;
  int rank = 0;
  for (int b = 0; b < 256; ++b) out += b64(std::string(1, static_cast<char>(b))) + " " + std::to_string(rank++) + "\n";
  for (const char* t : {"ab", "abc", "ca"}) out += b64(t) + " " + std::to_string(rank++) + "\n";
  return out;
}

TEST(TiktokenTokenizer, TinyFileMergesByRank) {
  const auto tok = TiktokenTokenizer::from_text(tiny_tiktoken(), "tiny");
  EXPECT_EQ(tok->vocab_size(), 259 + 210);
  EXPECT_EQ(tok->special_id("<|endoftext|>"), 259);
  // "abca": pairs ab(256) < ca(258): ab c a -> (ab,c)=abc(257) < (c,a)=258 -> abc a.
  EXPECT_EQ(tok->encode("abca"), (std::vector<int32_t>{257, 'a'}));
  // "cab": ca(258) vs ab(256): ab first -> c ab; (c,ab) is no token -> [c, ab].
  EXPECT_EQ(tok->encode("cab"), (std::vector<int32_t>{'c', 256}));
}

TEST(TokenizerErrors, MalformedTiktoken) {
  TempDir dir;
  const fs::path path = dir.path() / "hy.tiktoken";
  const std::string good = tiny_tiktoken();
  // Bad rank: line 3 says 7.
  {
    std::string bad = good;
    const std::size_t line3 = bad.find("Ag== 2\n");
    ASSERT_NE(line3, std::string::npos);
    bad.replace(line3, 7, "Ag== 7\n");
    write_all(path, bad);
    expect_format_error([&] { TiktokenTokenizer::from_file(path); }, {path.string(), "line 3", "rank 7"});
  }
  // Bad base64 on line 2.
  {
    std::string bad = good;
    bad.replace(bad.find("AQ== 1\n"), 7, "A*== 1\n");
    write_all(path, bad);
    expect_format_error([&] { TiktokenTokenizer::from_file(path); }, {path.string(), "line 2", "base64"});
  }
  for (const std::string& token : {std::string("AQ="), std::string("A==="), std::string("=AAA"), std::string("")}) {
    write_all(path, token + " 0\n");
    expect_format_error([&] { TiktokenTokenizer::from_file(path); }, {path.string(), "line 1"});
  }
  // Duplicate bytes: "ab" again as rank 259.
  write_all(path, good + b64("ab") + " 259\n");
  expect_format_error([&] { TiktokenTokenizer::from_file(path); }, {path.string(), "line 260", "line 257"});
  // Missing rank / non-numeric rank / missing single byte / empty file.
  write_all(path, "IQ==\n");
  expect_format_error([&] { TiktokenTokenizer::from_file(path); }, {path.string(), "line 1"});
  write_all(path, "IQ== x\n");
  expect_format_error([&] { TiktokenTokenizer::from_file(path); }, {path.string(), "line 1", "rank"});
  write_all(path, "IQ== 0\n");
  expect_format_error([&] { TiktokenTokenizer::from_file(path); }, {path.string(), "byte 0x00"});
  write_all(path, "");
  expect_format_error([&] { TiktokenTokenizer::from_file(path); }, {path.string(), "no tokens"});
}

// Random byte corruption of a small tokenizer.json / hy.tiktoken: either it still loads or it is
// an angelslim::Error (FormatError/Unsupported); nothing else escapes.
TEST(TokenizerErrors, CorruptedFilesOnlyThrowTypedErrors) {
  std::mt19937 rng(3);
  const std::string tik = tiny_tiktoken();
  json tj = json::parse(read_all(kFixtureDir / "tokenizer.json"));
  tj["model"]["merges"] = json(std::vector<json>(tj["model"]["merges"].begin(), tj["model"]["merges"].begin() + 50));
  const std::string small_json = tj.dump();
  int loaded = 0;
  for (int i = 0; i < 200; ++i) {
    for (const bool is_json : {true, false}) {
      std::string doc = is_json ? small_json : tik;
      std::uniform_int_distribution<std::size_t> where(0, doc.size() - 1);
      std::uniform_int_distribution<int> byte(0, 255);
      for (int k = 0; k < 1 + i % 4; ++k) doc[where(rng)] = static_cast<char>(byte(rng));
      try {
        if (is_json) {
          BpeTokenizer::from_json(doc, "fuzz.json")->encode("Hello 123 world");
        } else {
          TiktokenTokenizer::from_text(doc, "fuzz.tiktoken")->encode("Hello 123 world");
        }
        ++loaded;
      } catch (const Error&) {
      }
    }
  }
  // Some corruptions (inside a token string) still load; most must not.
  EXPECT_GT(loaded, 0);
  EXPECT_LT(loaded, 400);
}

}  // namespace
}  // namespace angelslim
