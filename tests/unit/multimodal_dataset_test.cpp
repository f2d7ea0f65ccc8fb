// MultiModalDataset (SPEC 1.7.3) on the hy-ocr-tiny tokenizer/template: rendering with the OCR template
// (SPEC 1.6.3), image placeholder expansion (SPEC 3.8.3/3.8.4), image path resolution, text-only records,
// skipping of unreadable images and of image spans crossing max_seq_length, right truncation.
#include "angelslim/data/multimodal_dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "angelslim/core/error.h"
#include "angelslim/model/model_config.h"

namespace angelslim {
namespace {

namespace fs = std::filesystem;
const std::string kData = ANGELSLIM_TEST_DATA;
const std::string kModel = kData + "/fixtures/hy-ocr-tiny";

struct Fixture {
  std::unique_ptr<Tokenizer> tok = Tokenizer::load(kModel);
  ChatTemplate tmpl = ChatTemplate::load(kModel);
  ModelConfig cfg = load_model_config(kModel);
  ImageProcessorConfig proc = load_image_processor_config(kModel);
};

TEST(MultiModalDataset, RendersExpandsAndPositions) {
  Fixture f;
  MultiModalStats st;
  const auto s = load_multimodal_dataset(kData + "/calib/multimodal/fake_data.json", *f.tok, f.tmpl, f.cfg, f.proc,
                                         4096, 256, false, 42, &st);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(st.with_image, 5);
  EXPECT_EQ(st.text_only, 0);
  // Record 0: 0.png (850x600) -> 288x192 -> grid 12x18 -> 6 * (9 + 1) + 2 = 62 image tokens.
  const auto& a = s[0];
  ASSERT_EQ(a.images.size(), 1u);
  EXPECT_EQ(a.images[0].grid_h, 12);
  EXPECT_EQ(a.images[0].grid_w, 18);
  const std::string text =
      "<｜hy_begin▁of▁sentence｜><｜hy_place▁holder▁no▁100｜><｜hy_place▁holder▁no▁102｜>"
      "<｜hy_place▁holder▁no▁101｜>How many food item is shown in the bar graph?<｜hy_User｜>14"
      "<｜hy_Assistant｜>";
  auto ref = f.tok->encode(text);
  ASSERT_EQ(ref[2], f.cfg.image_token_id);
  ref.insert(ref.begin() + 2, 61, static_cast<int32_t>(f.cfg.image_token_id));
  EXPECT_EQ(a.ids, ref);
  EXPECT_EQ(a.image_begin, std::vector<int64_t>{2});
  // Positions: slot 0 (begin) keeps its index; the grid starts at 3 with w = column, h = row, t = 0.
  ASSERT_EQ(a.xd_pos.size(), a.ids.size() * 4);
  for (int k = 0; k < 4; ++k) EXPECT_EQ(a.xd_pos[2 * 4 + k], 2);
  EXPECT_EQ(a.xd_pos[3 * 4 + 0], 3);
  EXPECT_EQ(a.xd_pos[3 * 4 + 1], 0);
  EXPECT_EQ(a.xd_pos[(3 + 10 + 9) * 4 + 1], 9);  // row 1, newline column 9
  EXPECT_EQ(a.xd_pos[(3 + 10 + 9) * 4 + 2], 1);
  const std::size_t last = a.ids.size() - 1;
  for (int k = 0; k < 4; ++k) EXPECT_EQ(a.xd_pos[last * 4 + k], int32_t(last));
}

TEST(MultiModalDataset, PathsTextOnlySkipsAndTruncation) {
  Fixture f;
  const fs::path dir = fs::temp_directory_path() / ("as-mm-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "images");
  fs::copy_file(kData + "/calib/multimodal/1.png", dir / "images" / "chart.png");
  {
    std::ofstream o(dir / "data.jsonl");
    o << R"({"question": "Read it.", "answer": "ok", "img_path": "chart.png"})"
      << "\n\n"
      << R"({"question": "Plain text question", "answer": "plain answer"})"
      << "\n"
      << R"({"question": "Missing image", "answer": "x", "img_path": "./nope.png"})"
      << "\n"
      << R"({"messages": [{"role": "user", "content": [{"type": "image", "image": "images/chart.png"}, )"
      << R"({"type": "text", "text": "What?"}]}, {"role": "assistant", "content": "A chart."}]})"
      << "\n";
  }
  MultiModalStats st;
  auto s = load_multimodal_dataset(dir / "data.jsonl", *f.tok, f.tmpl, f.cfg, f.proc, 4096, 0, false, 42, &st);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(st.with_image, 2);
  EXPECT_EQ(st.text_only, 1);
  EXPECT_EQ(st.skipped_image_error, 1);
  EXPECT_EQ(s[0].source_line, 1);
  EXPECT_EQ(s[1].source_line, 3);
  EXPECT_TRUE(s[1].images.empty());
  ASSERT_EQ(s[2].images.size(), 1u);  // the messages record, its image found as images/chart.png
  EXPECT_EQ(s[2].image_begin, std::vector<int64_t>{2});
  // The image span of record 1 ends at index 64 (its image_end token); max_seq_length 60 cuts it: skipped.
  // 66 keeps the span and truncates the text after it.
  s = load_multimodal_dataset(dir / "data.jsonl", *f.tok, f.tmpl, f.cfg, f.proc, 60, 1, false, 42, &st);
  EXPECT_EQ(st.skipped_image_span_truncated, 1);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_TRUE(s[0].images.empty());
  s = load_multimodal_dataset(dir / "data.jsonl", *f.tok, f.tmpl, f.cfg, f.proc, 66, 1, false, 42, &st);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_TRUE(s[0].truncated);
  EXPECT_EQ(s[0].ids.size(), 66u);
  EXPECT_EQ(s[0].xd_pos.size(), 264u);
  EXPECT_EQ(s[0].ids[64], f.cfg.image_end_id);
  fs::remove_all(dir);
}

TEST(MultiModalDataset, BadRecords) {
  Fixture f;
  const fs::path p = fs::temp_directory_path() / ("as-mm-bad-" + std::to_string(::getpid()) + ".jsonl");
  {
    std::ofstream o(p);
    o << R"({"prompt": "no known shape"})"
      << "\n";
  }
  try {
    load_multimodal_dataset(p, *f.tok, f.tmpl, f.cfg, f.proc, 512, 0, false, 42);
    FAIL();
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find(":1:"), std::string::npos) << e.what();
  }
  fs::remove(p);
}

// A number outside double's range is a JSON error of its own kind (out_of_range, not parse_error); it must end as
// the same one-line InvalidInput naming the line, not as an internal error (the text reader had this bug too).
TEST(MultiModalDataset, NumberOverflowIsAnInputError) {
  Fixture f;
  const fs::path p = fs::temp_directory_path() / ("as-mm-ovf-" + std::to_string(::getpid()) + ".jsonl");
  {
    std::ofstream o(p);
    o << R"({"question": "q", "answer": "a"})" << "\n" << R"({"question": 1e3083})" << "\n";
  }
  try {
    load_multimodal_dataset(p, *f.tok, f.tmpl, f.cfg, f.proc, 512, 0, false, 42);
    FAIL() << "no error for an out-of-range number";
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find(":2: not a valid JSON object"), std::string::npos) << e.what();
  }
  fs::remove(p);
}

}  // namespace
}  // namespace angelslim
