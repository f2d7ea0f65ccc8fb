// Reliability through the real binary (issue 8): write failures end with one clear line and leave no output (an
// injected ENOSPC at every phase of a run, a read-only directory), NaN/Inf in the source weights is reported with
// the tensor name (or skipped with --allow-nonfinite), and the CPU backend repeats its output byte for byte.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "proc_util.h"

namespace angelslim {
namespace {

using nlohmann::json;
using test::TmpDir;
namespace fs = std::filesystem;
using test::kFp8Dynamic;
using test::kFp8Static;
const char* const kGptq = test::kGptq4;


// The output of a config goes to <save path>/<YAML stem>; `out` is that directory.
std::vector<std::string> quantize_args(const fs::path& cfg, const fs::path& out) {
  return {"-q", "-c", cfg.string(), "--save-path", out.parent_path().string(), "--no-resume"};
}

int newlines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

// Nothing of the output exists: no final directory, no temporary directory, no checkpoint without a manifest.
void expect_no_output(const fs::path& parent, const fs::path& out) {
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(test::entries_with_prefix(parent, ".tmp-").empty());
  EXPECT_TRUE(test::entries_with_prefix(parent, ".old-").empty());
  const fs::path ckpt = parent / (".ckpt-" + out.filename().string());
  if (fs::exists(ckpt)) {
    EXPECT_TRUE(fs::exists(ckpt / "manifest.json")) << "a checkpoint is kept only with a state";
  }
}

// The N-th write of the run fails with ENOSPC, for N from the first write to the very last one (found by doubling
// and bisection): every failure is one line naming the file and "No space left on device", exit status 2, and no
// output is published.
// `extra_env`: more environment for the runs (the deferred layer writes).
void check_disk_full_at_every_phase(const std::vector<std::string>& extra_env) {
  TmpDir d("wfault");
  const auto cfg = test::write_config(d.path(), "dyn", "hy-dense-tiny", "HunyuanDense", kFp8Dynamic);
  const fs::path out = d.path() / "out" / "dyn";
  int failures = 0;
  std::string last_err;
  auto attempt = [&](long n) {
    std::vector<std::string> env = extra_env;
    env.push_back("ANGELSLIM_FAULT_WRITE=" + std::to_string(n));
    const auto r = test::run_bin(quantize_args(cfg, out), d.path(), env);
    if (r.status == 0) {
      fs::remove_all(out);
      return true;
    }
    ++failures;
    last_err = r.err;
    EXPECT_EQ(r.status, 2) << "N=" << n << ": " << r.err;
    EXPECT_EQ(newlines(r.err), 1) << "N=" << n << ": " << r.err;
    EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << "N=" << n << ": " << r.err;
    expect_no_output(out.parent_path(), out);
    return false;
  };
  if (!test::kCheckQuality) {  // sanitizer build: the first write and one inside the layers
    EXPECT_FALSE(attempt(1));
    EXPECT_FALSE(attempt(40));
    return;
  }
  long ok = 1;
  while (!attempt(ok)) ok *= 2;  // the smallest power of two past the run's writes
  long bad = ok / 2;             // fails (or 0)
  while (ok - bad > 1) {
    const long mid = (ok + bad) / 2;
    (attempt(mid) ? ok : bad) = mid;
  }
  ASSERT_GE(bad, 1);
  std::printf("[ faults ] the run makes %ld writes; %d injected failures checked\n", bad, failures);
  // The last write is the run report; the one before the config: both are inside the temporary directory.
  EXPECT_FALSE(attempt(bad));
  EXPECT_NE(last_err.find("quant_report.json"), std::string::npos) << last_err;
  EXPECT_GE(failures, 8);
}

TEST(WriteErrors, InjectedDiskFullAtEveryPhase) { check_disk_full_at_every_phase({}); }

// The same with the layers written on a second thread while the next layer is quantized: a failed write there ends
// the run the same way.
TEST(WriteErrors, InjectedDiskFullInDeferredWrites) { check_disk_full_at_every_phase({"ANGELSLIM_DEFER_WRITES=1"}); }

TEST(WriteErrors, ReadOnlyDirectory) {
  TmpDir d("rofs");
  const auto cfg = test::write_config(d.path(), "dyn", "hy-dense-tiny", "HunyuanDense", kFp8Dynamic);
  const fs::path ro = d.path() / "ro";
  fs::create_directories(ro);
  ::chmod(ro.c_str(), 0555);
  const fs::path out = ro / "out" / "dyn";
  // As root the child drops to nobody, so that the permission bits apply.
  const auto r = test::run_bin(quantize_args(cfg, out), d.path(), {}, true);
  ::chmod(ro.c_str(), 0755);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(newlines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(ro.string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_empty(ro));
}

// A copy of the dense fixture whose tensor `name` gets the 2-byte value `bits` at element `index`.
fs::path poisoned_fixture(const fs::path& dir, const std::string& name, int64_t index, uint16_t bits) {
  const fs::path m = dir / "model";
  fs::create_directories(m);
  for (const auto& e : fs::directory_iterator(test::kData + "/fixtures/hy-dense-tiny"))
    if (e.path().extension() != ".xz") fs::copy_file(e.path(), m / e.path().filename());
  const json idx = json::parse(read_file(m / "model.safetensors.index.json"));
  const fs::path shard = m / idx.at("weight_map").at(name).get<std::string>();
  std::string bytes = read_file(shard);
  uint64_t hl = 0;
  std::memcpy(&hl, bytes.data(), 8);
  const json h = json::parse(bytes.substr(8, hl));
  EXPECT_EQ(h.at(name).at("dtype").get<std::string>(), "BF16");
  const uint64_t off = 8 + hl + h.at(name).at("data_offsets").at(0).get<uint64_t>() + 2 * static_cast<uint64_t>(index);
  std::memcpy(bytes.data() + off, &bits, 2);
  write_file_atomic(shard, bytes);
  return m;
}

TEST(Nonfinite, NanInALayerWeightNamesTheTensor) {
  TmpDir d("nan");
  const auto m = poisoned_fixture(d.path(), "model.layers.2.mlp.down_proj.weight", 384 * 3 + 7, 0x7fc0);  // NaN
  const auto cfg = test::write_config(d.path(), "s", "hy-dense-tiny", "HunyuanDense", kFp8Static, 4, 64);
  auto args = quantize_args(cfg, d.path() / "out" / "s");
  args.insert(args.end(), {"--model-path", m.string()});
  const auto r = test::run_bin(args, d.path());
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(newlines(r.err), 1) << r.err;
  // down_proj is [384, 1024]: flat element 384*3+7 = 1159 is [1, 135].
  EXPECT_NE(r.err.find("tensor 'model.layers.2.mlp.down_proj.weight' element [1, 135] is nan"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("--allow-nonfinite"), std::string::npos) << r.err;
  expect_no_output(d.path() / "out", d.path() / "out" / "s");
}

// An Inf in an embedding row no calibration token uses: an error by default; with --allow-nonfinite the row is
// copied as it is and the run succeeds.
TEST(Nonfinite, InfInAnUnusedEmbeddingRowAndAllowNonfinite) {
  TmpDir d("inf");
  const int64_t row = 16383, hidden = 384;
  const auto m = poisoned_fixture(d.path(), "model.embed_tokens.weight", row * hidden + 5, 0xff80);  // -Inf
  const auto cfg = test::write_config(d.path(), "s", "hy-dense-tiny", "HunyuanDense", kFp8Static, 4, 64);
  auto args = quantize_args(cfg, d.path() / "out" / "s");
  args.insert(args.end(), {"--model-path", m.string()});
  const auto r = test::run_bin(args, d.path());
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("tensor 'model.embed_tokens.weight' element [16383, 5] is -inf"), std::string::npos) << r.err;
  args.push_back("--allow-nonfinite");
  const auto r2 = test::run_bin(args, d.path());
  ASSERT_EQ(r2.status, 0) << r2.err;
  TensorStore st(d.path() / "out" / "s");
  const auto& emb = st.get("model.embed_tokens.weight");
  uint16_t v = 0;
  std::memcpy(&v, emb.data + 2 * (row * hidden + 5), 2);
  EXPECT_EQ(v, 0xff80);
}

// Same inputs, same --threads: byte-identical outputs (every file but the report's timings), here for GPTQ with
// two BLAS threads. Different --threads do not give identical bytes: OpenBLAS's threaded kernels (sgemm, ssyrk,
// dpotrf/dtrtri) reduce in an order that depends on the thread count (docs/reliability.md).
TEST(Determinism, GptqRepeatsWithTheSameThreads) {
  TmpDir d("det");
  const auto cfg = test::write_config(d.path(), "g", "hy-dense-tiny", "HunyuanDense", kGptq, 4, 128);
  std::vector<fs::path> outs;
  for (const char* run : {"1", "2"}) {
    outs.push_back(d.path() / (std::string("out") + run) / "g");
    auto args = quantize_args(cfg, outs.back());
    args.insert(args.end(), {"--threads", "2"});
    const auto r = test::run_bin(args, d.path());
    ASSERT_EQ(r.status, 0) << r.err;
  }
  const auto names = test::file_names(outs[0]);
  ASSERT_EQ(names, test::file_names(outs[1]));
  for (const auto& n : names) {
    if (n != "quant_report.json") {
      EXPECT_TRUE(read_file(outs[0] / n) == read_file(outs[1] / n)) << n << " differs";
    }
  }
}

}  // namespace
}  // namespace angelslim
