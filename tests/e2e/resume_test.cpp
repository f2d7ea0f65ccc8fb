// Kill and resume through the real binary (issue 8): a run SIGKILLed after a random completed layer and started
// again with the same command continues from its checkpoint and publishes exactly the bytes of an uninterrupted
// run (every file but quant_report.json, which holds timings). The kill layer and delay are random per run and
// printed; ANGELSLIM_TEST_KILL_SEED=<n> repeats one. Also: a changed config, model or calibration data, or
// --no-resume, starts over and says so.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "e2e_util.h"
#include "proc_util.h"

namespace angelslim {
namespace {

using nlohmann::json;
using test::TmpDir;
namespace fs = std::filesystem;
using test::kFp8Static;
const char* const kGptq = test::kGptq4;

const char* kAwq =
    "    name: int4_awq\n    bits: 4\n    quant_method:\n      weight: per-group\n      group_size: 128\n"
    "      zero_point: true\n      mse_range: false\n";

constexpr int kDenseLayers = 6;  // hy-dense-tiny

// The output of a config goes to <save path>/<YAML stem>; `out` is that directory.
std::vector<std::string> quantize_args(const fs::path& cfg, const fs::path& out) {
  return {"-q", "-c", cfg.string(), "--save-path", out.parent_path().string()};
}

fs::path ckpt_of(const fs::path& out) { return out.parent_path() / (".ckpt-" + out.filename().string()); }

// Every file of `a` equals the file of the same name in `b`, except quant_report.json.
void expect_same_output(const fs::path& a, const fs::path& b) {
  const auto na = test::file_names(a), nb = test::file_names(b);
  ASSERT_EQ(na, nb);
  for (const auto& n : na) {
    if (n == "quant_report.json") continue;
    EXPECT_TRUE(read_file(a / n) == read_file(b / n)) << n << " differs";
  }
}

// layers_done of the checkpoint manifest, or -1 while there is none (it is replaced atomically, never partial).
int64_t layers_done(const fs::path& manifest) {
  std::error_code ec;
  if (!fs::exists(manifest, ec)) return -1;
  try {
    return json::parse(read_file(manifest)).at("layers_done").get<int64_t>();
  } catch (const std::exception&) {
    return -1;  // renamed away between the check and the read
  }
}

uint32_t kill_seed() {
  if (const char* s = std::getenv("ANGELSLIM_TEST_KILL_SEED"); s && *s) return static_cast<uint32_t>(std::stoul(s));
  return std::random_device{}();
}

void kill_and_resume(const std::string& tag, const std::string& quant, int max_len = 128) {
  TmpDir d("resume");
  const auto cfg = test::write_config(d.path(), tag, "hy-dense-tiny", "HunyuanDense", quant, 4, max_len);
  const fs::path ref = d.path() / "ref" / tag, out = d.path() / "out" / tag;
  const auto r0 = test::run_bin(quantize_args(cfg, ref), d.path());
  ASSERT_EQ(r0.status, 0) << r0.err;

  const uint32_t seed = kill_seed();
  std::mt19937 rng(seed);
  int k = std::uniform_int_distribution<int>(1, kDenseLayers - 2)(rng);
  int delay_us = std::uniform_int_distribution<int>(0, 5000)(rng);
  const fs::path manifest = ckpt_of(out) / "manifest.json";
  int status = 0;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::printf("[ resume ] %s: SIGKILL once layer %d is done, after %d us more (ANGELSLIM_TEST_KILL_SEED=%u)\n",
                tag.c_str(), k, delay_us, seed);
    std::fflush(stdout);
    const pid_t pid = test::spawn_bin(quantize_args(cfg, out), d.path() / "kill.out", d.path() / "kill.err");
    bool exited = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (layers_done(manifest) >= k) {
        std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
        ::kill(pid, SIGKILL);
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (!exited) {
      ::kill(pid, SIGKILL);  // also past the deadline
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    }
    if (WIFSIGNALED(status)) break;
    // The run finished inside the delay (a fast machine): once more, killed as early as possible.
    ASSERT_EQ(WEXITSTATUS(status), 0) << read_file(d.path() / "kill.err");
    fs::remove_all(out);
    k = 1;
    delay_us = 0;
  }
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it was killed: " << read_file(d.path() / "kill.err");
  const int64_t done = layers_done(manifest);
  std::printf("[ resume ] %s: killed with %lld layer(s) in the checkpoint\n", tag.c_str(),
              static_cast<long long>(done));
  ASSERT_GE(done, k);
  EXPECT_FALSE(fs::exists(out));

  // What a kill between a layer's tensor writes and its manifest leaves behind: bytes past the recorded length and
  // a half-written activation file. The restart must ignore both.
  {
    std::ofstream junk(ckpt_of(out) / "shard-0.data", std::ios::binary | std::ios::app);
    junk << "bytes of a layer that never reached the manifest";
    std::ofstream tmp(ckpt_of(out) / ".tmp-acts-00099.f32", std::ios::binary);
    tmp << "partial";
  }

  const auto r1 = test::run_bin(quantize_args(cfg, out), d.path());
  ASSERT_EQ(r1.status, 0) << r1.err;
  EXPECT_NE(r1.out.find("resume: continuing at layer " + std::to_string(done)), std::string::npos) << r1.out;
  const json rep = json::parse(read_file(out / "quant_report.json"));
  EXPECT_EQ(rep.at("resume").at("resumed_from_layer").get<int64_t>(), done);
  EXPECT_EQ(rep.at("layers").size(), static_cast<std::size_t>(kDenseLayers));
  EXPECT_FALSE(fs::exists(ckpt_of(out))) << "the checkpoint folder must be removed on success";
  EXPECT_TRUE(test::entries_with_prefix(out.parent_path(), ".tmp-").empty()) << "the killed run's temporary directory";
  expect_same_output(ref, out);
}

TEST(Resume, KillAndResumeFp8Static) { kill_and_resume("fp8_static", kFp8Static); }
TEST(Resume, KillAndResumeGptq) { kill_and_resume("int4_gptq", kGptq); }
// AWQ's per-layer search makes this one about 30 s: run it with --gtest_also_run_disabled_tests.
TEST(Resume, DISABLED_KillAndResumeAwq) { kill_and_resume("int4_awq", kAwq, 64); }

// A run that stops with an error after some layers (here an injected ENOSPC) keeps its checkpoint.
void fail_midway(const fs::path& cfg, const fs::path& out, const fs::path& logs) {
  const auto r = test::run_bin(quantize_args(cfg, out), logs, {"ANGELSLIM_FAULT_WRITE=60"});
  ASSERT_EQ(r.status, 2) << r.err;
  ASSERT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  ASSERT_GE(layers_done(ckpt_of(out) / "manifest.json"), 1);
}

void expect_started_over(const test::BinResult& r, const fs::path& out, const std::string& why) {
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("not resuming, " + why), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("starting over"), std::string::npos) << r.out;
  const json rep = json::parse(read_file(out / "quant_report.json"));
  EXPECT_TRUE(rep.at("resume").at("resumed_from_layer").is_null());
  EXPECT_NE(rep.at("resume").at("discarded").get<std::string>().find(why), std::string::npos);
  EXPECT_FALSE(fs::exists(ckpt_of(out)));
}

TEST(Resume, ChangedConfigStartsOver) {
  TmpDir d("resume");
  const auto cfg = test::write_config(d.path(), "a", "hy-dense-tiny", "HunyuanDense", kFp8Static, 4, 64);
  const fs::path out = d.path() / "out" / "a";
  fail_midway(cfg, out, d.path());
  const std::string per_channel =
      "    name: fp8_static\n    bits: 8\n    quant_method:\n      weight: per-channel\n      activation: per-tensor\n";
  const auto cfg2 = test::write_config(d.path(), "a", "hy-dense-tiny", "HunyuanDense", per_channel, 4, 64);
  expect_started_over(test::run_bin(quantize_args(cfg2, out), d.path()), out, "the configuration changed");
}

TEST(Resume, ChangedModelStartsOver) {
  TmpDir d("resume");
  const fs::path model = d.path() / "model";
  fs::create_directories(model);
  for (const auto& e : fs::directory_iterator(test::kData + "/fixtures/hy-dense-tiny"))
    if (e.path().extension() != ".xz") fs::copy_file(e.path(), model / e.path().filename());
  const auto cfg = test::write_config(d.path(), "a", "hy-dense-tiny", "HunyuanDense", kFp8Static, 4, 64);
  const fs::path out = d.path() / "out" / "a";
  auto args = quantize_args(cfg, out);
  args.push_back("--model-path");
  args.push_back(model.string());
  {
    const auto r = test::run_bin(args, d.path(), {"ANGELSLIM_FAULT_WRITE=60"});
    ASSERT_EQ(r.status, 2) << r.err;
    ASSERT_GE(layers_done(ckpt_of(out) / "manifest.json"), 1);
  }
  // One mantissa bit of the last bf16 value of a shard: same size, same tensor names, other bytes.
  const fs::path shard = model / "model-00003-of-00003.safetensors";
  std::string bytes = read_file(shard);
  bytes[bytes.size() - 2] = static_cast<char>(bytes[bytes.size() - 2] ^ 1);
  write_file_atomic(shard, bytes);
  expect_started_over(test::run_bin(args, d.path()), out, "the input model changed");
}

TEST(Resume, ChangedDataStartsOver) {
  TmpDir d("resume");
  const fs::path data = d.path() / "calib.jsonl";
  fs::copy_file(test::kData + "/calib/sharegpt_gpt4_256.jsonl", data);
  auto cfg_text = read_file(test::write_config(d.path(), "a", "hy-dense-tiny", "HunyuanDense", kFp8Static, 4, 64));
  const std::string orig = test::kData + "/calib/sharegpt_gpt4_256.jsonl";
  cfg_text.replace(cfg_text.find(orig), orig.size(), data.string());
  const fs::path cfg = d.path() / "a.yaml";
  write_file_atomic(cfg, cfg_text);
  const fs::path out = d.path() / "out" / "a";
  fail_midway(cfg, out, d.path());
  // Drop the first record: the sampled token ids change.
  std::string jsonl = read_file(data);
  write_file_atomic(data, jsonl.substr(jsonl.find('\n') + 1));
  expect_started_over(test::run_bin(quantize_args(cfg, out), d.path()), out, "the calibration data changed");
}

TEST(Resume, NoResumeStartsOver) {
  TmpDir d("resume");
  const auto cfg = test::write_config(d.path(), "a", "hy-dense-tiny", "HunyuanDense", kFp8Static, 4, 64);
  const fs::path out = d.path() / "out" / "a";
  fail_midway(cfg, out, d.path());
  auto args = quantize_args(cfg, out);
  args.push_back("--no-resume");
  const auto r = test::run_bin(args, d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("--no-resume: discarding the checkpoint"), std::string::npos) << r.out;
  const json rep = json::parse(read_file(out / "quant_report.json"));
  EXPECT_TRUE(rep.at("resume").at("resumed_from_layer").is_null());
  EXPECT_FALSE(fs::exists(ckpt_of(out)));
}

// Resuming after an error (not a kill) also continues from the checkpoint and gives the same bytes.
TEST(Resume, ResumeAfterDiskFullMatchesUninterrupted) {
  TmpDir d("resume");
  const auto cfg = test::write_config(d.path(), "a", "hy-dense-tiny", "HunyuanDense", kFp8Static, 4, 64);
  const fs::path ref = d.path() / "ref" / "a", out = d.path() / "out" / "a";
  ASSERT_EQ(test::run_bin(quantize_args(cfg, ref), d.path()).status, 0);
  fail_midway(cfg, out, d.path());
  EXPECT_FALSE(fs::exists(out));
  const auto r = test::run_bin(quantize_args(cfg, out), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("resume: continuing at layer"), std::string::npos) << r.out;
  expect_same_output(ref, out);
}

}  // namespace
}  // namespace angelslim
