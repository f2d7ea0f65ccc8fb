// Windowed perplexity; see include/angelslim/eval/perplexity.h.
#include "angelslim/eval/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "angelslim/core/error.h"
#include "angelslim/core/progress.h"
#include "angelslim/io/safetensors.h"

namespace angelslim {

std::vector<int32_t> read_ids_file(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() % 4 != 0)
    throw InvalidInput(fmt::format("{}: {} bytes is not a whole number of int32 token ids (expected a multiple of 4)",
                                   path.string(), bytes.size()));
  std::vector<int32_t> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), bytes.size());
  return ids;
}

PerplexityResult perplexity(const HunyuanModel& model, const std::vector<int32_t>& ids, int64_t seq_len,
                            int64_t windows, bool progress) {
  if (seq_len < 2) throw InvalidInput(fmt::format("--seq-len {} must be at least 2", seq_len));
  const int64_t available = static_cast<int64_t>(ids.size()) / seq_len;
  if (available == 0)
    throw InvalidInput(fmt::format("--seq-len {} is larger than the data ({} tokens)", seq_len, ids.size()));
  if (windows <= 0) windows = available;
  if (windows > available)
    throw InvalidInput(fmt::format("--windows {} needs {} tokens but the data has {} ({} windows of {})", windows,
                                   windows * seq_len, ids.size(), available, seq_len));
  const int64_t V = model.config().vocab_size;
  for (int32_t id : ids)
    if (id < 0 || id >= V)
      throw InvalidInput(fmt::format("token id {} is outside the model's vocabulary [0, {})", id, V));
  PerplexityResult r;
  r.seq_len = seq_len;
  r.windows = windows;
  double sum = 0.0;
  const auto t0 = std::chrono::steady_clock::now();
  Progress bar("eval", windows * seq_len, "tok", progress);
  // Windows are independent sequences: run them as ragged batches of about 4096 tokens (bigger GEMMs).
  const int64_t per_batch = std::max<int64_t>(1, 4096 / seq_len);
  for (int64_t w = 0; w < windows; w += per_batch) {
    const int64_t count = std::min(per_batch, windows - w);
    const auto nll = model.nll_batch(ids.data() + w * seq_len, count, seq_len);
    for (float v : nll) sum += v;
    r.tokens += static_cast<int64_t>(nll.size());
    bar.advance(count * seq_len, fmt::format("ppl {:.3f}", std::exp(sum / static_cast<double>(r.tokens))));
  }
  bar.finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.mean_nll = sum / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.mean_nll);
  r.tokens_per_second = static_cast<double>(windows * seq_len) / std::max(r.seconds, 1e-9);
  return r;
}

}  // namespace angelslim
