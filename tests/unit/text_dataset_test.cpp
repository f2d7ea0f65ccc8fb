// Text calibration dataset (SPEC 1.7.1/1.7.2) with a byte tokenizer (one id per UTF-8 byte, BOS = 256),
// so ids decode back to the exact text that was tokenized: record shapes, role rules, skipping,
// truncation, num_samples, seeded shuffling and errors; plus the ShareGPT goldens through prepare_record.
#include "angelslim/data/text_dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "angelslim/core/error.h"

namespace angelslim {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

const fs::path kData = ANGELSLIM_TEST_DATA;
constexpr int32_t kBos = 256;

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (char c : text) ids.push_back(static_cast<unsigned char>(c));
    return ids;
  }
  std::string decode(std::span<const int32_t> ids) const override {
    std::string s;
    for (int32_t id : ids) s += id == kBos ? std::string("<BOS>") : std::string(1, static_cast<char>(id));
    return s;
  }
  int32_t vocab_size() const override { return 257; }
  std::optional<int32_t> special_id(std::string_view) const override { return std::nullopt; }
  int32_t bos_id() const override { return kBos; }
  std::vector<int32_t> eos_ids() const override { return {}; }
};

// Shows role and content of every message, so the tests see exactly what the dataset rendered.
const char* kTemplate = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}";

class TextDataset : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("angelslim_text_dataset_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& content) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }

  std::vector<std::string> texts(const std::vector<CalibSample>& samples) const {
    std::vector<std::string> out;
    for (const auto& s : samples) out.push_back(tok_.decode(s.ids));
    return out;
  }

  std::vector<CalibSample> load(const fs::path& p, int64_t max_len = 1 << 20, int64_t n = 0, bool shuffle = false,
                                uint64_t seed = 42) {
    return load_text_dataset(p, tok_, tmpl_, max_len, n, shuffle, seed, &stats_);
  }

  fs::path dir_;
  ByteTokenizer tok_;
  ChatTemplate tmpl_{kTemplate, "test-template"};
  DatasetStats stats_;
};

TEST_F(TextDataset, RecordShapesInSpecOrder) {
  const auto p = write("shapes.jsonl",
                       R"({"applied_message": "<raw>chat"}
{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "system_prompt": "SYS"}
{"messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "system_prompt": "SYS"}
{"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": ""}, {"from": "gpt", "value": "g"}], "system": "S2"}
{"conversations": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "v"}], "system_prompt": "S3"}
{"input": "in", "output": "out", "system_prompt": "S4"}
{"text": "plain"}
{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, {"role": "assistant", "content": null}], "text": "ignored"}

{"conversations": [{"from": "chatgpt", "value": "x"}, {"from": "human_1", "value": "y"}]}
)");
  const auto samples = load(p);
  const std::vector<std::string> want = {
      "<raw>chat",                         // applied_message: as is, no BOS
      "[system]SYS[user]hi[assistant]yo",  // system_prompt prepended
      "[system]own[user]q[assistant]a",    // ... unless messages[0] is system
      "[system]S2[user]h[assistant]g",     // ShareGPT: empty turn dropped, "system" used
      "[system]S3[user]u[assistant]v",     // role/content spellings, system_prompt
      "[system]S4[user]in[assistant]out",  // input/output pair
      "<BOS>plain",                        // raw text: BOS prepended
      "[user]ab[assistant]",               // content list joined, null -> "", messages before text
      "[assistant]x[user]y",               // *gpt* -> assistant, *human* -> user
  };
  EXPECT_EQ(texts(samples), want);
  std::vector<int64_t> lines;
  for (const auto& s : samples) lines.push_back(s.source_line);
  EXPECT_EQ(lines, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 10}));  // line 9 is blank
  EXPECT_EQ(samples[6].ids.front(), kBos);
  EXPECT_EQ(stats_.records_read, 9);
  EXPECT_EQ(stats_.blank_lines, 1);
  EXPECT_EQ(stats_.samples_kept, 9);
  EXPECT_EQ(stats_.by_shape[static_cast<int>(RecordShape::kMessages)], 3);
  EXPECT_EQ(stats_.by_shape[static_cast<int>(RecordShape::kConversations)], 3);
  const auto j = stats_.to_json();
  EXPECT_EQ(j["kept_by_shape"]["applied_message"], 1);
  EXPECT_EQ(j["samples_kept"], 9);
}

TEST_F(TextDataset, SkipsAndTruncation) {
  const auto p = write("skips.jsonl",
                       R"({"messages": [{"role": "user", "content": "no answer"}]}
{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}
{"applied_message": "x"}
{"text": ""}
{"text": "0123456789"}
{"input": "i", "output": "o", "tools": [{"name": "f"}]}
)");
  const auto samples = load(p, /*max_len=*/5);
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(tok_.decode(samples[0].ids), "<BOS>0123");  // the first max_seq_length ids survive
  EXPECT_TRUE(samples[0].truncated);
  EXPECT_EQ(samples[0].source_line, 5);
  EXPECT_EQ(tok_.decode(samples[1].ids), "[user");  // "[user]i[assistant]o" cut to 5
  EXPECT_EQ(stats_.skipped_no_assistant, 1);
  EXPECT_EQ(stats_.skipped_bad_role, 1);
  EXPECT_EQ(stats_.skipped_too_short, 2);  // "x" -> 1 id; "" -> [BOS] only
  EXPECT_EQ(stats_.truncated, 2);
  EXPECT_EQ(stats_.tokens_total, 10);
  EXPECT_EQ(stats_.tokens_truncated, (11 - 5) + (19 - 5));
  EXPECT_EQ(stats_.tools_ignored, 1);
  EXPECT_EQ(stats_.min_len, 5);
  EXPECT_EQ(stats_.max_len, 5);
  ASSERT_GE(stats_.warnings.size(), 1u);
  EXPECT_EQ(stats_.warnings[0], p.string() + ":1: skipped: no assistant turn");
}

TEST_F(TextDataset, NumSamplesCountsKeptSamplesInFileOrder) {
  std::string content;
  for (int i = 0; i < 10; ++i) {
    content += i % 3 == 0 ? R"({"messages": [{"role": "user", "content": "only user"}]})"
                            "\n"
                          : fmt::format(R"({{"text": "r{}"}})"
                                        "\n",
                                        i);
  }
  const auto p = write("n.jsonl", content);
  const auto samples = load(p, 1 << 20, /*n=*/4);
  EXPECT_EQ(texts(samples), (std::vector<std::string>{"<BOS>r1", "<BOS>r2", "<BOS>r4", "<BOS>r5"}));
  EXPECT_EQ(stats_.records_visited, 6);
  EXPECT_EQ(stats_.skipped_no_assistant, 2);
  EXPECT_EQ(stats_.records_read, 10);
  // More requested than available: all usable samples.
  EXPECT_EQ(load(p, 1 << 20, 100).size(), 6u);
}

TEST_F(TextDataset, SeededShuffleIsDeterministicAndPortable) {
  std::string content;
  for (int i = 0; i < 10; ++i)
    content += fmt::format(R"({{"text": "{}"}})"
                           "\n",
                           i);
  const auto p = write("shuffle.jsonl", content);
  auto order = [&](bool shuffle, uint64_t seed, int64_t n) {
    std::string s;
    for (const auto& sample : load(p, 1 << 20, n, shuffle, seed)) s += tok_.decode(sample.ids).substr(5);
    return s;
  };
  EXPECT_EQ(order(false, 42, 0), "0123456789");
  // Golden permutation: std::mt19937_64(42) (its output sequence is fixed by the C++ standard) driving
  // Fisher-Yates from the back with j = x % (i + 1), x rejected when x >= 2^64 - 1 - (2^64 - 1) % (i + 1);
  // computed independently by scripts/golden/shuffle_golden.py (a Python MT19937-64).
  EXPECT_EQ(order(true, 42, 0), "1790384256");
  EXPECT_EQ(order(true, 42, 0), order(true, 42, 0));
  EXPECT_NE(order(true, 43, 0), order(true, 42, 0));
  EXPECT_EQ(order(true, 42, 3), order(true, 42, 0).substr(0, 3));  // num_samples taken after the shuffle
  std::string sorted = order(true, 7, 0);
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, "0123456789");
}

TEST_F(TextDataset, ErrorsNameFileAndLine) {
  const auto bad = write("bad.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": oops}\n");
  try {
    load(bad);
    FAIL() << "expected InvalidInput";
  } catch (const InvalidInput& e) {
    EXPECT_EQ(std::string(e.what()).rfind(bad.string() + ":3: not a valid JSON object", 0), 0u) << e.what();
  }
  const auto noshape = write("noshape.json", "{\"text\": \"ok\"}\n{\"prompt\": \"x\", \"answer\": \"y\"}\n");
  try {
    load(noshape);
    FAIL() << "expected InvalidInput";
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find(noshape.string() + ":2: record has none of the accepted shapes"),
              std::string::npos);
    EXPECT_NE(std::string(e.what()).find("[prompt, answer]"), std::string::npos) << e.what();
  }
  const auto array_file = write("array.json", "[{\"text\": \"a\"},\n {\"text\": \"b\"}]\n");
  try {
    load(array_file);
    FAIL() << "expected InvalidInput";
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("one JSON object per line"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load(write("type.jsonl", "{\"messages\": \"hi\"}\n")), InvalidInput);
  EXPECT_THROW(
      load(write(
          "image.jsonl",
          R"({"messages": [{"role": "user", "content": [{"type": "image", "image": "a.png"}]}, {"role": "assistant", "content": "x"}]})")),
      InvalidInput);
  EXPECT_THROW(load(dir_ / "missing.jsonl"), IoError);
  EXPECT_THROW(load(write("data.parquet", "PAR1")), InvalidInput);
  EXPECT_THROW(load(write("ok.jsonl", "{\"text\": \"ok\"}\n"), /*max_len=*/1), InvalidInput);
  // A template error names the data line.
  const ChatTemplate failing("{{ raise_exception('no') }}", "failing");
  const auto chat = write("chat.jsonl", "{\"text\": \"t\"}\n{\"input\": \"i\", \"output\": \"o\"}\n");
  try {
    load_text_dataset(chat, tok_, failing, 100, 0, false, 0, nullptr);
    FAIL() << "expected InvalidInput";
  } catch (const InvalidInput& e) {
    EXPECT_EQ(std::string(e.what()).rfind(chat.string() + ":2: rendering the chat template failed: failing:1:4:", 0),
              0u)
        << e.what();
  }
}

TEST_F(TextDataset, ShareGptGoldensThroughTheFixtureTemplate) {
  // tokenizer_goldens.json: transformers' rendering of sharegpt lines with the hy-dense-tiny template.
  std::ifstream gin(kData / "tokenizers/tokenizer_goldens.json");
  const auto goldens = nlohmann::json::parse(gin)["chat_calibration_samples"];
  const ChatTemplate fixture = ChatTemplate::load(kData / "fixtures/hy-dense-tiny");
  const auto samples =
      load_text_dataset(kData / "calib/sharegpt_gpt4_256.jsonl", tok_, fixture, 1 << 24, 0, false, 0, &stats_);
  ASSERT_EQ(samples.size(), 256u);
  EXPECT_EQ(stats_.by_shape[static_cast<int>(RecordShape::kConversations)], 256);
  for (const auto& g : goldens) {
    const auto line = g["line"].get<std::size_t>();
    const auto& s = samples[line];
    EXPECT_EQ(s.source_line, static_cast<int64_t>(line) + 1);
    const std::string text = tok_.decode(s.ids);
    const std::string want = g["rendered"].get<std::string>();
    EXPECT_EQ(text.substr(0, want.size()), want) << "line " << line;
    std::size_t cps = 0;
    for (char c : text) cps += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    EXPECT_EQ(cps, g["rendered_len"].get<std::size_t>()) << "line " << line;
  }
}

}  // namespace
}  // namespace angelslim
