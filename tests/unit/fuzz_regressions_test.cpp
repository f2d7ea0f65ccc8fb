// Replays every input under fuzz/regressions/<target>/ (inputs on which a fuzz target once crashed, hung or
// leaked) through the same parser as its fuzz target: each must now load or be rejected with a typed user error
// (never Internal, never a foreign exception). Under the ASan+UBSan build this also re-checks memory safety.
// The specific messages are checked in the per-bug tests at the end.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "angelslim/config/run_config.h"
#include "angelslim/core/error.h"
#include "angelslim/data/image.h"
#include "angelslim/data/text_dataset.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/model_config.h"
#include "angelslim/text/bpe_tokenizer.h"
#include "angelslim/text/chat_template.h"
#include "angelslim/text/tiktoken_tokenizer.h"

namespace fs = std::filesystem;

namespace angelslim {
namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const fs::path kRegressions = fs::path(ANGELSLIM_SOURCE_DIR) / "fuzz" / "regressions";

const Tokenizer& fixture_tokenizer() {
  static const auto tok = Tokenizer::load(fs::path(ANGELSLIM_TEST_DATA) / "fixtures" / "hy-dense-tiny");
  return *tok;
}
const ChatTemplate& fixture_template() {
  static const auto t = ChatTemplate::load(fs::path(ANGELSLIM_TEST_DATA) / "fixtures" / "hy-dense-tiny");
  return t;
}

// What each fuzz target does with its input (see fuzz/fuzz_<target>.cpp).
const std::map<std::string, std::function<void(const std::string&)>>& replayers() {
  static const std::map<std::string, std::function<void(const std::string&)>> m = {
      {"safetensors",
       [](const std::string& b) {
         parse_safetensors(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(b.data()), b.size()), "x");
       }},
      {"safetensors_index", [](const std::string& b) { parse_safetensors_index(b, "x"); }},
      {"model_config",
       [](const std::string& b) {
         const auto j = nlohmann::json::parse(b, nullptr, false);
         if (!j.is_discarded()) parse_model_config(j, "x").rope_base();
       }},
      {"run_config", [](const std::string& b) { parse_run_config(b, "configs/fuzz.yaml").to_json().dump(); }},
      {"bpe_tokenizer",
       [](const std::string& b) {
         auto t = BpeTokenizer::from_json(b, "x");
         t->decode(t->encode("Hello world, 123!"));
       }},
      {"tiktoken",
       [](const std::string& b) {
         auto t = TiktokenTokenizer::from_text(b, "x");
         t->decode(t->encode("Hello world, 123!"));
       }},
      {"chat_template",
       [](const std::string& b) {
         ChatTemplate t(b, "x");
         t.render(nlohmann::ordered_json::parse(R"([{"role": "user", "content": "hi"}])"), true);
       }},
      {"text_dataset",
       [](const std::string& b) { parse_text_dataset(b, "x", fixture_tokenizer(), fixture_template(), 64, 0, false, 42); }},
      {"image",
       [](const std::string& b) {
         ImageProcessorConfig cfg;
         cfg.min_pixels = 32 * 32;
         cfg.max_pixels = 32 * 32 * 16;
         preprocess_image(decode_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "x"), cfg);
       }},
  };
  return m;
}

TEST(FuzzRegressions, EveryInputLoadsOrFailsWithAUserError) {
  if (!fs::is_directory(kRegressions)) GTEST_SKIP() << "no " << kRegressions;
  int replayed = 0;
  for (const auto& dir : fs::directory_iterator(kRegressions)) {
    if (!dir.is_directory()) continue;
    const auto target = dir.path().filename().string();
    const auto it = replayers().find(target);
    ASSERT_NE(it, replayers().end()) << "fuzz/regressions/" << target << " has no replayer";
    for (const auto& f : fs::directory_iterator(dir.path())) {
      SCOPED_TRACE(f.path().string());
      try {
        it->second(slurp(f.path()));
      } catch (const Internal& e) {
        ADD_FAILURE() << "internal error: " << e.what();
      } catch (const Error&) {
      } catch (const std::exception& e) {
        ADD_FAILURE() << "untyped exception: " << e.what();
      }
      ++replayed;
    }
  }
  RecordProperty("replayed", replayed);
}


// --- one test per finding (fuzz/README.md): the input class, rebuilt from files under tests/data where it
// needs a real file, and the one-line message the user now gets.

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

// fuzz_run_config: a NUL in a YAML value came back from yaml-cpp as a lone 0x85 byte, and dumping the config to
// quant_report.json threw nlohmann's type_error (an "internal error" exit); bytes that are not UTF-8 did the same.
TEST(FuzzRegressions, RunConfigRejectsControlCharactersAndInvalidUtf8) {
  const std::string base = "global:\n  save_path: ./out\n";
  EXPECT_EQ(error_of<InvalidInput>([&] { parse_run_config(base + std::string("  seed: 4\0002\n", 12), "c.yaml"); }),
            "c.yaml:3:10: a control character (YAML allows only printable characters) (byte 0x00); save the config "
            "as UTF-8 text");
  EXPECT_EQ(error_of<InvalidInput>([&] { parse_run_config("a: \xff\n", "c.yaml"); }),
            "c.yaml:1:4: not UTF-8 text (byte 0xFF); save the config as UTF-8 text");
  // Valid UTF-8 (non-ASCII, tabs, CRLF) still reaches the schema checks, and its strings dump.
  const std::string msg =
      error_of<InvalidInput>([&] { parse_run_config("global:\r\n  save_path: \"./\xe8\xbe\x93\xe5\x87\xba\"\r\n", "c.yaml"); });
  EXPECT_EQ(msg.find("UTF-8"), std::string::npos) << msg;
  EXPECT_NE(msg.find("c.yaml: model: missing"), std::string::npos) << msg;
}

// fuzz_text_dataset: a number out of double range ("1e308" followed by digits) raised json::out_of_range, which
// the reader did not catch (only parse_error).
TEST(FuzzRegressions, TextDatasetNumberOutOfRange) {
  const std::string msg = error_of<InvalidInput>(
      [] { parse_text_dataset("{\"text\": \"a\"}\n1e3083\n", "d.jsonl", fixture_tokenizer(), fixture_template(), 64, 0, false, 1); });
  EXPECT_EQ(msg.rfind("d.jsonl:2: not a valid JSON object (", 0), 0u) << msg;
  EXPECT_NE(msg.find("number overflow"), std::string::npos) << msg;
}

// Same class in tokenizer_config.json read by ChatTemplate::load.
TEST(FuzzRegressions, TokenizerConfigNumberOutOfRange) {
  const fs::path dir = fs::temp_directory_path() / ("as-fuzzreg-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer_config.json") << "{\"model_max_length\": 1e999, \"chat_template\": \"x\"}";
  const std::string msg = error_of<FormatError>([&] { ChatTemplate::load(dir); });
  fs::remove_all(dir);
  EXPECT_NE(msg.find("tokenizer_config.json: invalid JSON: "), std::string::npos) << msg;
}

// fuzz_chat_template: "0" * 100000000 appended one character at a time and stalled the run (a timeout). The
// product is now capped at 4M characters/items and built by doubling.
TEST(FuzzRegressions, ChatTemplateRepetition) {
  auto render = [](const std::string& src) {
    return ChatTemplate(src, "t").render(nlohmann::ordered_json::array(), false);
  };
  EXPECT_EQ(render("{{ 'abc' * 7 }}"), std::string("abcabcabcabcabcabcabc"));
  EXPECT_EQ(render("{{ '' * 5 }}|{{ 'x' * 0 }}|{{ [1, 2] * 3 }}"), "||[1, 2, 1, 2, 1, 2]");
  EXPECT_EQ(render("{{ ('ab' * 2097152) | length }}"), "4194304");
  const std::string msg = error_of<Error>([&] { render("{{ '0' * 100000000 }}"); });
  EXPECT_NE(msg.find("repetition result is too large"), std::string::npos) << msg;
}

// fuzz_image: stb_image writes past its 257-entry Huffman size list for a DHT table of more than 256 codes
// (UBSan: index 257 out of bounds). The JPEG is now rejected first; real JPEGs still decode.
TEST(FuzzRegressions, JpegHuffmanTableWithTooManyCodes) {
  const fs::path jpg = fs::path(ANGELSLIM_TEST_DATA) / "calib" / "multimodal" / "canyon.jpg";
  const std::string good = slurp(jpg);
  ASSERT_GT(good.size(), 1000u);
  const auto decode = [](const std::string& b) {
    return decode_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "img.jpg");
  };
  const RgbImage ref = decode(good);
  EXPECT_GT(ref.width, 0);
  const std::size_t dht = good.find("\xff\xc4");
  ASSERT_NE(dht, std::string::npos);
  const std::string kMsg = "img.jpg: corrupt JPEG: a Huffman table declares more than 256 codes";
  // 1. the first table's counts sum to 257
  std::string bad = good;
  for (int i = 0; i < 16; ++i) bad[dht + 5 + i] = 0;
  bad[dht + 5 + 14] = 2;
  bad[dht + 5 + 15] = static_cast<char>(255);
  EXPECT_EQ(error_of<FormatError>([&] { decode(bad); }), kMsg);
  // 2. the same preceded by FF fill bytes, which stb_image skips before SOI
  EXPECT_EQ(error_of<FormatError>([&] { decode("\xff\xff" + bad); }), kMsg);
  // 3. a second table inside one DHT segment, after a valid one (segment length covers both)
  std::string two = good;
  const std::string table = std::string("\x11", 1) + std::string(14, '\0') + "\x02\xff";
  const std::size_t len = (static_cast<unsigned char>(good[dht + 2]) << 8) | static_cast<unsigned char>(good[dht + 3]);
  two.insert(dht + 2 + len, table);
  const std::size_t len2 = len + table.size();
  two[dht + 2] = static_cast<char>(len2 >> 8);
  two[dht + 3] = static_cast<char>(len2 & 0xff);
  EXPECT_EQ(error_of<FormatError>([&] { decode(two); }), kMsg);
  // 4. a DHT segment after the scan, before EOI
  std::string late = good.substr(0, good.size() - 2) + std::string("\xff\xc4\x00\x13\x10", 5) + std::string(14, '\0') +
                     "\x02\xff" + "\xff\xd9";
  EXPECT_EQ(error_of<FormatError>([&] { decode(late); }), kMsg);
  // The other real JPEGs and PNGs of tests/data decode as before.
  for (const char* name : {"airplane.jpg", "boats.jpg", "0.png", "1.png"}) {
    const RgbImage img = load_image(fs::path(ANGELSLIM_TEST_DATA) / "calib" / "multimodal" / name);
    EXPECT_GT(img.width * img.height, 0) << name;
  }
}

// fuzz_image: a PNG whose first IDAT chunk is empty made stb_image memcpy from a null pointer (UBSan: nonnull
// argument). Empty IDAT chunks are dropped before decoding: the image with one inserted before its first IDAT (and
// another before IEND) decodes to exactly the pixels of the original.
TEST(FuzzRegressions, PngEmptyIdatChunksDecodeLikeTheOriginal) {
  const std::string good = slurp(fs::path(ANGELSLIM_TEST_DATA) / "calib" / "multimodal" / "0.png");
  const auto decode = [](const std::string& b) {
    return decode_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "img.png");
  };
  const RgbImage ref = decode(good);
  ASSERT_GT(ref.width, 0);
  const std::string empty_idat("\0\0\0\0IDAT\x35\xaf\x06\x1e", 12);  // length 0, type, CRC-32 of "IDAT"
  const std::size_t idat = good.find("IDAT"), iend = good.rfind("IEND");
  ASSERT_NE(idat, std::string::npos);
  ASSERT_NE(iend, std::string::npos);
  std::string bad = good;
  bad.insert(iend - 4, empty_idat);
  bad.insert(idat - 4, empty_idat);
  const RgbImage got = decode(bad);
  EXPECT_EQ(got.width, ref.width);
  EXPECT_EQ(got.height, ref.height);
  EXPECT_TRUE(got.rgb == ref.rgb);
  // fuzz_image: a 246-byte PNG whose IDAT declares 2 GB made stb_image allocate them before reading (libFuzzer:
  // out-of-memory). A chunk longer than the rest of the file is now an error before decoding; cutting a real PNG
  // short gives the same error.
  const std::string kMsg = "img.png: corrupt PNG: a chunk is longer than the rest of the file";
  EXPECT_EQ(error_of<FormatError>([&] {
              decode(slurp(fs::path(ANGELSLIM_SOURCE_DIR) / "fuzz" / "regressions" / "image" / "png_idat_length_2gb.png"));
            }),
            kMsg);
  EXPECT_EQ(error_of<FormatError>([&] { decode(good.substr(0, idat + 40)); }), kMsg);
}

// fuzz_image: JPEGs of a few hundred bytes declaring 16408 x 12032 and 65474 x 4096 pixels took over 10 s each to
// decode. Images above the pixel limit are rejected from their header; the limit itself is inclusive.
TEST(FuzzRegressions, ImagesAboveThePixelLimitAreRejectedBeforeDecoding) {
  const std::string big = slurp(fs::path(ANGELSLIM_SOURCE_DIR) / "fuzz" / "regressions" / "image" /
                                "jpeg_197_megapixels.jpg");
  const auto decode = [](const std::string& b, int64_t limit) {
    return decode_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "img.jpg", limit);
  };
  EXPECT_EQ(error_of<FormatError>([&] { decode(big, kMaxImagePixels); }),
            "img.jpg: image of 16408 x 12032 pixels is larger than the limit of 178956970 pixels");
  const std::string jpg = slurp(fs::path(ANGELSLIM_TEST_DATA) / "calib" / "multimodal" / "canyon.jpg");
  const RgbImage ref = decode(jpg, kMaxImagePixels);
  const int64_t n = ref.width * ref.height;
  EXPECT_EQ(decode(jpg, n).rgb, ref.rgb);
  EXPECT_NE(error_of<FormatError>([&] { decode(jpg, n - 1); }).find("larger than the limit"), std::string::npos);
}

}  // namespace
}  // namespace angelslim
