// `--device` selection (issue 6): without a CUDA build or device, `--device cuda` fails before any work with one line
// (Unsupported, exit 2), AWQ included; unknown devices are rejected.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include "angelslim/calib/backend.h"
#include "angelslim/core/error.h"
#include "e2e_util.h"

namespace angelslim {
namespace {

std::filesystem::path fp8_config(const test::TmpDir& dir, const std::string& algo = "fp8_static") {
  const std::string quant =
      algo == "int4_awq"
          ? "    name: int4_awq\n    bits: 4\n    quant_method:\n      weight: per-group\n      group_size: 128\n"
            "      zero_point: true\n      mse_range: false\n"
          : "    name: " + algo +
                "\n    bits: 8\n    quant_method:\n      weight: per-tensor\n      activation: per-tensor\n";
  return test::write_config(dir.path(), "run", "hy-dense-tiny", "HunyuanDense", quant, 4, 64);
}

// run_pipeline(ro) must fail with one Unsupported line (exit 2) that contains every one of `needles`, and leave no
// output behind.
void expect_unsupported_line(const test::TmpDir& dir, const RunOptions& ro,
                             std::initializer_list<const char*> needles) {
  try {
    run_pipeline(ro);
    FAIL() << "expected Unsupported";
  } catch (const Unsupported& e) {
    const std::string msg = e.what();
    for (const char* n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(e.exit_code(), 2);
  }
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "out" / "run")) << "no output on failure";
}

TEST(DeviceSelection, CudaWithoutDeviceIsOneUnsupportedLine) {
  if (cuda_calib_available()) GTEST_SKIP() << "a CUDA device is present (tests/gpu covers --device cuda)";
  test::TmpDir dir("device");
  RunOptions ro;
  ro.config_path = fp8_config(dir);
  ro.device = "cuda";
  expect_unsupported_line(dir, ro, {"--device cuda"});
  // The CLI prints exactly one line and exits 2.
  const auto err = dir.path() / "stderr.txt";
  const std::string cmd = std::string(ANGELSLIM_BIN) + " -q -c " + ro.config_path.string() + " --device cuda 2>" +
                          err.string() + " >/dev/null";
  const int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  std::ifstream f(err);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_EQ(text.rfind("error: --device cuda", 0), 0u) << text;
}

TEST(DeviceSelection, AwqWithoutDeviceIsUnsupported) {
  if (cuda_calib_available()) GTEST_SKIP() << "a CUDA device is present (tests/gpu/cuda_awq_test.cpp covers AWQ there)";
  test::TmpDir dir("device");
  RunOptions ro;
  ro.config_path = fp8_config(dir, "int4_awq");
  ro.device = "cuda";
  EXPECT_THROW(run_pipeline(ro), Unsupported);
}

// AWQ with GPTQ rounding (ext) has no GPU path: one line naming the key, with or without a GPU, before any work.
TEST(DeviceSelection, AwqGptqRoundingOnCudaIsUnsupported) {
  test::TmpDir dir("device");
  const std::string quant =
      "    name: int4_awq\n    bits: 4\n    quant_method:\n      weight: per-group\n      group_size: 128\n"
      "      zero_point: true\n      mse_range: false\n      weight_rounding: gptq\n";
  RunOptions ro;
  ro.config_path = test::write_config(dir.path(), "run", "hy-dense-tiny", "HunyuanDense", quant, 4, 64);
  ro.device = "cuda";
  expect_unsupported_line(dir, ro, {"weight_rounding: gptq", "--device cpu"});
}

TEST(DeviceSelection, UnknownDeviceIsInvalidInput) {
  test::TmpDir dir("device");
  RunOptions ro;
  ro.config_path = fp8_config(dir);
  ro.device = "tpu";
  EXPECT_THROW(run_pipeline(ro), InvalidInput);
}

}  // namespace
}  // namespace angelslim
