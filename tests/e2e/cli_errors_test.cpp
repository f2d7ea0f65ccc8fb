// Bad input through the real command line: exit status 2, exactly one line on stderr that names the file (or
// flag) and what was wrong, no crash (issue 2's list of failure classes).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include "angelslim/io/safetensors.h"
#include "e2e_util.h"

namespace angelslim {
namespace {

namespace fs = std::filesystem;
using test::TmpDir;

struct Result {
  int status = -1;
  std::string err;
};

Result run(const std::string& args, const fs::path& tmp) {
  const fs::path err = tmp / "stderr.txt";
  const std::string cmd = std::string(ANGELSLIM_BIN) + " -q " + args + " >/dev/null 2>" + err.string();
  const int rc = std::system(cmd.c_str());
  Result r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.err = read_file(err);
  return r;
}

void expect_one_line(const Result& r, const std::string& needle1, const std::string& needle2) {
  EXPECT_EQ(r.status, 2) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle1), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(needle2), std::string::npos) << r.err;
}

// A copy of the dense fixture that a test may damage.
fs::path copy_fixture(const TmpDir& d) {
  const fs::path dst = d.path() / "model";
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(test::kData + "/fixtures/hy-dense-tiny"))
    if (e.path().extension() != ".xz") fs::copy_file(e.path(), dst / e.path().filename());
  return dst;
}

const std::string kIds = test::kData + "/eval/heldout.hy-tiny.ids.bin";

TEST(CliErrors, TruncatedShard) {
  TmpDir d("cli");
  const auto m = copy_fixture(d);
  const auto shard = m / "model-00002-of-00003.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 1000);
  expect_one_line(run("eval --model " + m.string() + " --ids " + kIds + " --windows 1", d.path()),
                  "model-00002-of-00003.safetensors", "data area");
}

TEST(CliErrors, HeaderLiesAboutOffsets) {
  TmpDir d("cli");
  const auto m = copy_fixture(d);
  const auto shard = m / "model-00003-of-00003.safetensors";
  std::string bytes = read_file(shard);
  // Make the first tensor claim 4 more bytes than its shape needs (same header length, digits swapped in place).
  const auto pos = bytes.find("\"data_offsets\":[0,");
  ASSERT_NE(pos, std::string::npos);
  auto end_pos = pos + std::string("\"data_offsets\":[0,").size();
  auto close = bytes.find(']', end_pos);
  std::string num = bytes.substr(end_pos, close - end_pos);
  std::string bumped = std::to_string(std::stoll(num) + 4);
  ASSERT_EQ(bumped.size(), num.size());
  bytes.replace(end_pos, num.size(), bumped);
  write_file_atomic(shard, bytes);
  expect_one_line(run("inspect " + m.string(), d.path()), "model-00003-of-00003.safetensors", "expected");
}

TEST(CliErrors, MissingShard) {
  TmpDir d("cli");
  const auto m = copy_fixture(d);
  fs::remove(m / "model-00001-of-00003.safetensors");
  expect_one_line(run("inspect " + m.string(), d.path()), "model-00001-of-00003.safetensors", "missing");
}

TEST(CliErrors, UnknownModelType) {
  TmpDir d("cli");
  const auto m = copy_fixture(d);
  std::string cfg = read_file(m / "config.json");
  cfg.replace(cfg.find("HunYuanDenseV1ForCausalLM"), 25, "LlamaForCausalLM");
  cfg.replace(cfg.find("hunyuan_v1_dense"), 16, "llama");
  write_file_atomic(m / "config.json", cfg);
  expect_one_line(run("inspect " + m.string(), d.path()), "config.json", "llama");
}

TEST(CliErrors, BadTokenizerJson) {
  TmpDir d("cli");
  const auto m = copy_fixture(d);
  const std::string tok = read_file(m / "tokenizer.json");
  write_file_atomic(m / "tokenizer.json", tok.substr(0, tok.size() / 2));
  const auto text = d.path() / "t.txt";
  write_file_atomic(text, "hello world, this is a test of a broken tokenizer file.");
  expect_one_line(run("eval --model " + m.string() + " --text " + text.string() + " --seq-len 4", d.path()),
                  "tokenizer.json", "JSON");
}

TEST(CliErrors, OddLengthIdsFile) {
  TmpDir d("cli");
  const auto ids = d.path() / "ids.bin";
  write_file_atomic(ids, std::string(4 * 1000 + 2, '\0'));
  expect_one_line(run("eval --model " + test::kData + "/fixtures/hy-dense-tiny --ids " + ids.string(), d.path()),
                  "ids.bin", "multiple of 4");
}

TEST(CliErrors, SeqLenLargerThanData) {
  TmpDir d("cli");
  const auto ids = d.path() / "ids.bin";
  std::string b(4 * 100, '\0');
  write_file_atomic(ids, b);
  expect_one_line(run("eval --model " + test::kData + "/fixtures/hy-dense-tiny --ids " + ids.string() +
                          " --seq-len 512",
                      d.path()),
                  "--seq-len 512", "100 tokens");
}

TEST(CliErrors, MissingModelDirAndBadConfigKey) {
  TmpDir d("cli");
  expect_one_line(run("inspect " + (d.path() / "nope").string(), d.path()), "nope", "does not exist");
  const auto y = d.path() / "c.yaml";
  write_file_atomic(y, "global:\n  save_path: ./o\n  sede: 3\nmodel:\n  name: HunyuanDense\n  model_path: " +
                           test::kData + "/fixtures/hy-dense-tiny\ncompression:\n  name: PTQ\n  quantization:\n"
                           "    name: fp8_dynamic\n    bits: 8\n    quant_method:\n      weight: per-tensor\n");
  const auto r = run("-c " + y.string(), d.path());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("global.sede"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d.path() / "o"));
}

}  // namespace
}  // namespace angelslim
