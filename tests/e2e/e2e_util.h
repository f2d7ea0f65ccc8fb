// Helpers for end-to-end tests: temporary directories, YAML configs for the fixtures, running the pipeline.
#pragma once
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "angelslim/eval/perplexity.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/pipeline/pipeline.h"

namespace angelslim::test {

inline const std::string kData = ANGELSLIM_TEST_DATA;

// The compression.quantization blocks the end-to-end tests start from (YAML, indented for the quantization key).
inline constexpr const char* kFp8Static =
    "    name: fp8_static\n    bits: 8\n    quant_method:\n      weight: per-tensor\n      activation: per-tensor\n";
inline constexpr const char* kFp8Dynamic =
    "    name: fp8_dynamic\n    bits: 8\n    quant_method:\n      weight: per-tensor\n      activation: per-tensor\n";
inline constexpr const char* kGptq4 =
    "    name: int4_gptq\n    bits: 4\n    quant_method:\n      weight: per-group\n      group_size: 128\n"
    "      actorder: true\n";

// Same allocator tuning as tools/angelslim/main.cpp (per-sample buffers stay on the heap, no mmap churn).
inline const bool kMallocTuned = (mallopt(M_MMAP_THRESHOLD, 32 << 20), mallopt(M_TRIM_THRESHOLD, 256 << 20), true);

// Under ASan/UBSan (about 10x slower) the end-to-end tests run every code path on a few short samples and keep
// their structure checks; the perplexity bounds, which need the full calibration set, are checked in the release
// run only (tests say so with `if (test::kCheckQuality)`).
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kCheckQuality = false;
#else
inline constexpr bool kCheckQuality = true;
#endif

class TmpDir {
 public:
  explicit TmpDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() /
            ("as-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TmpDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// Writes a YAML config named `stem`.yaml into dir for a fixture; `quant` is the body of
// compression.quantization (indented by 4 spaces), e.g. "    name: fp8_static\n    bits: 8\n ...".
inline std::filesystem::path write_config(const std::filesystem::path& dir, const std::string& stem,
                                          const std::string& fixture, const std::string& model_name,
                                          const std::string& quant, int num_samples = 16, int max_len = 256) {
  if (!kCheckQuality) {
    num_samples = std::min(num_samples, 4);
    max_len = std::min(max_len, 128);
  }
  const auto p = dir / (stem + ".yaml");
  std::ofstream f(p);
  f << "global:\n  save_path: " << (dir / "out").string() << "\n"
    << "model:\n  name: " << model_name << "\n  model_path: " << kData << "/fixtures/" << fixture << "\n"
    << "compression:\n  name: PTQ\n  quantization:\n" << quant
    << "dataset:\n  name: TextDataset\n  data_path: " << kData << "/calib/sharegpt_gpt4_256.jsonl\n"
    << "  max_seq_length: " << max_len << "\n  num_samples: " << num_samples << "\n";
  return p;
}

// Perplexity over the first `windows` windows of 512 tokens of the held-out ids (fp32 reference forward).
inline double heldout_ppl(const std::filesystem::path& model_dir, int windows = 4) {
  HunyuanModel m(model_dir);
  const auto ids = read_ids_file(kData + "/eval/heldout.hy-tiny.ids.bin");
  return perplexity(m, ids, 512, windows, false).ppl;
}

}  // namespace angelslim::test
