// Perplexity over consecutive non-overlapping windows (protocol of the reference numbers, SPEC 6.2):
// window w covers ids[w*L, (w+1)*L), L-1 scored next-token predictions each, PPL = exp(mean NLL).
#pragma once
#include <cstdint>
#include <filesystem>
#include <vector>

#include "angelslim/model/hunyuan.h"

namespace angelslim {

struct PerplexityResult {
  double ppl = 0.0;
  double mean_nll = 0.0;
  int64_t tokens = 0;   // scored predictions
  int64_t windows = 0;
  int64_t seq_len = 0;
  double seconds = 0.0;
  double tokens_per_second = 0.0;  // forward throughput: window tokens / seconds
};

// windows <= 0: every full window. Throws InvalidInput when seq_len < 2 or larger than the data.
PerplexityResult perplexity(const HunyuanModel& model, const std::vector<int32_t>& ids, int64_t seq_len,
                            int64_t windows, bool progress = true);

// Reads an ids file: int32 little-endian. Throws InvalidInput when the size is not a multiple of 4.
std::vector<int32_t> read_ids_file(const std::filesystem::path& path);

}  // namespace angelslim
