// The rows of docs/errors.md that no other test checks, through the real command line: each bad input ends with
// exit status 2 and one stderr line holding the documented message, and nothing is published.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>

#include <algorithm>
#include <functional>

#include "e2e_util.h"
#include "proc_util.h"

namespace angelslim {
namespace {

using test::TmpDir;
namespace fs = std::filesystem;
using test::kFp8Static;

const std::string kDense = test::kData + "/fixtures/hy-dense-tiny";

// A model directory of symlinks to the dense fixture's files, without those in `drop`.
fs::path linked_model(const fs::path& dir, const std::vector<std::string>& drop = {}) {
  const fs::path m = dir / "model";
  fs::create_directories(m);
  for (const auto& e : fs::directory_iterator(kDense)) {
    const std::string n = e.path().filename().string();
    if (e.path().extension() == ".xz" || std::find(drop.begin(), drop.end(), n) != drop.end()) continue;
    fs::create_symlink(e.path(), m / n);
  }
  return m;
}

void replace(std::string& s, const std::string& a, const std::string& b) {
  const auto p = s.find(a);
  ASSERT_NE(p, std::string::npos) << a;
  s.replace(p, a.size(), b);
}

// Runs `-q -c cfg [extra]` and expects status 2, `lines` lines on stderr (a YAML problem comes under a summary
// line), one containing `needle`, and no output directory (save path <d>/out, YAML stem c).
void expect_error(const TmpDir& d, const fs::path& cfg, const std::string& needle, std::vector<std::string> extra = {},
                  int lines = 1) {
  std::vector<std::string> args = {"-q", "-c", cfg.string(), "--save-path", (d.path() / "out").string()};
  args.insert(args.end(), extra.begin(), extra.end());
  const auto r = test::run_bin(args, d.path());
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), lines) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
  EXPECT_FALSE(fs::exists(d.path() / "out" / "c"));
  if (fs::exists(d.path() / "out")) {
    EXPECT_TRUE(fs::is_empty(d.path() / "out"));
  }
}

fs::path config_with(const TmpDir& d, const std::string& quant, const std::function<void(std::string&)>& edit) {
  const auto p = test::write_config(d.path(), "c", "hy-dense-tiny", "HunyuanDense", quant, 4, 64);
  std::string y = read_file(p);
  edit(y);
  write_file_atomic(p, y);
  return p;
}

TEST(ErrorTable, ConfigClasses) {
  {
    TmpDir d("err");
    const auto p = d.path() / "empty.yaml";
    write_file_atomic(p, "");
    expect_error(d, p, "the file is empty", {}, 2);
  }
  {
    TmpDir d("err");
    expect_error(d, config_with(d, kFp8Static, [](std::string& y) { replace(y, "fp8_static", "int3_foo"); }),
                 "'int3_foo' is not a known algorithm", {}, 2);
  }
  {
    TmpDir d("err");
    expect_error(d, config_with(d, kFp8Static, [](std::string& y) { replace(y, "HunyuanDense", "HunyuanMoE"); }),
                 "does not match the checkpoint");
  }
  {
    TmpDir d("err");
    expect_error(d, config_with(d, kFp8Static, [&](std::string& y) { replace(y, kDense, kDense + "/config.json"); }),
                 "config.json' is not a directory", {}, 2);
  }
  {
    TmpDir d("err");
    expect_error(d, config_with(d, kFp8Static, [](std::string& y) { y = y.substr(0, y.find("dataset:")); }),
                 "dataset: missing (expected a dataset section", {}, 2);
  }
  {
    TmpDir d("err");
    fs::create_directories(d.path() / "out");
    write_file_atomic(d.path() / "out" / "c", "a file");
    const auto cfg = config_with(d, kFp8Static, [](std::string&) {});
    const auto r = test::run_bin({"-q", "-c", cfg.string(), "--save-path", (d.path() / "out").string()}, d.path());
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.err.find("output path exists and is not a directory"), std::string::npos) << r.err;
  }
}

TEST(ErrorTable, ModelClasses) {
  {
    TmpDir d("err");
    const auto m = linked_model(d.path(), {"config.json"});
    expect_error(d, config_with(d, kFp8Static, [](std::string&) {}), "missing config.json",
                 {"--model-path", m.string()});
  }
  {
    TmpDir d("err");
    const auto m = linked_model(d.path(), {"config.json"});
    std::string c = read_file(kDense + "/config.json");
    replace(c, "{", "{\"quantization_config\": {\"quant_method\": \"fp8\"},");
    write_file_atomic(m / "config.json", c);
    expect_error(d, config_with(d, kFp8Static, [](std::string&) {}), "the input is already quantized",
                 {"--model-path", m.string()});
  }
  {
    TmpDir d("err");
    fs::create_directories(d.path() / "model");
    fs::create_symlink(kDense + "/config.json", d.path() / "model" / "config.json");
    expect_error(d, config_with(d, kFp8Static, [](std::string&) {}),
                 "no model.safetensors or model.safetensors.index.json",
                 {"--model-path", (d.path() / "model").string()});
  }
  {
    TmpDir d("err");
    const auto m = linked_model(d.path(), {"tokenizer.json"});
    expect_error(d, config_with(d, kFp8Static, [](std::string&) {}), "no tokenizer.json or hy.tiktoken",
                 {"--model-path", m.string()});
  }
  {
    TmpDir d("err");
    const auto m = linked_model(d.path(), {"chat_template.jinja"});
    expect_error(d, config_with(d, kFp8Static, [](std::string&) {}), "no chat template", {"--model-path", m.string()});
  }
}

TEST(ErrorTable, DataAndRunClasses) {
  {
    TmpDir d("err");
    expect_error(d,
                 config_with(d, kFp8Static,
                             [&](std::string& y) {
                               replace(y, test::kData + "/calib/sharegpt_gpt4_256.jsonl",
                                       (d.path() / "nope.jsonl").string());
                             }),
                 "nope.jsonl: cannot open for reading");
  }
  {
    TmpDir d("err");
    const auto data = d.path() / "users_only.jsonl";
    write_file_atomic(data, "{\"messages\": [{\"role\": \"user\", \"content\": \"hello there\"}]}\n");
    expect_error(
        d,
        config_with(d, kFp8Static,
                    [&](std::string& y) { replace(y, test::kData + "/calib/sharegpt_gpt4_256.jsonl", data.string()); }),
        "no usable calibration sample");
  }
  {
    // Another process holds the output's checkpoint lock.
    TmpDir d("err");
    const fs::path ckpt = d.path() / "out" / ".ckpt-c";
    fs::create_directories(ckpt);
    const int fd = ::open((ckpt / "lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    const auto cfg = config_with(d, kFp8Static, [](std::string&) {});
    const auto r = test::run_bin({"-q", "-c", cfg.string(), "--save-path", (d.path() / "out").string()}, d.path());
    ::close(fd);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find(".ckpt-c: another angelslim run is writing the same output"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(d.path() / "out" / "c"));
    EXPECT_TRUE(fs::exists(ckpt / "lock")) << "the other run's checkpoint is left alone";
  }
}

}  // namespace
}  // namespace angelslim
