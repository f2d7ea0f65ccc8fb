// Calibration samples through the whole path (jsonl -> chat template -> tokenizer -> truncation) against the
// reference ids of tokenizer_goldens.json "chat_calibration_samples" and the SPEC 1.7.2 example.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "angelslim/data/text_dataset.h"
#include "angelslim/io/safetensors.h"

namespace angelslim {
namespace {

const std::string kData = ANGELSLIM_TEST_DATA;

TEST(CalibDatasetGolden, ShareGptSamplesMatchReferenceIds) {
  const std::string dir = kData + "/fixtures/hy-dense-tiny";
  const auto tok = Tokenizer::load(dir);
  const auto tmpl = ChatTemplate::load(dir);
  DatasetStats stats;
  // All records, untruncated lengths checked via max_seq_length 512 (the reference protocol's cap).
  const auto samples = load_text_dataset(kData + "/calib/sharegpt_gpt4_256.jsonl", *tok, tmpl, 512, 0, false, 42, &stats);
  const auto goldens = nlohmann::json::parse(read_file(kData + "/tokenizers/tokenizer_goldens.json"));
  int checked = 0;
  for (const auto& g : goldens["chat_calibration_samples"]) {
    const int64_t line = g["line"].get<int64_t>() + 1;  // goldens count from 0, samples from 1
    const auto it = std::find_if(samples.begin(), samples.end(), [&](const CalibSample& s) { return s.source_line == line; });
    ASSERT_NE(it, samples.end()) << "line " << line << " was not kept";
    const auto want = g["ids_first_512"].get<std::vector<int32_t>>();
    EXPECT_EQ(it->ids, want) << "line " << line;
    EXPECT_EQ(it->truncated, g["n_ids"].get<int64_t>() > 512) << "line " << line;
    ++checked;
  }
  EXPECT_EQ(checked, 8);
  // SPEC 1.7.2: line 0 starts with BOS, <|hy_User|>, ... and is cut from 1281 to 512 tokens.
  ASSERT_FALSE(samples.empty());
  EXPECT_EQ(samples[0].source_line, 1);
  EXPECT_EQ(std::vector<int32_t>(samples[0].ids.begin(), samples[0].ids.begin() + 5),
            (std::vector<int32_t>{16374, 16377, 11635, 571, 3618}));
  EXPECT_EQ(samples[0].ids.size(), 512u);
  EXPECT_EQ(stats.samples_kept, static_cast<int64_t>(samples.size()));
  for (const auto& s : samples) EXPECT_LE(s.ids.size(), 512u);
}

}  // namespace
}  // namespace angelslim
