// BPE merge loop over ids (lowest rank first, leftmost first), as in HF tokenizers' Word::merge_all
// and tiktoken's byte_pair_merge; plus the word cache.
#include "text/bpe_merge.h"

#include <limits>
#include <queue>

namespace angelslim {
namespace {

// Words up to this many symbols use the quadratic rescan, which allocates nothing.
constexpr std::size_t kQuadraticMaxSymbols = 24;

struct Candidate {
  int32_t rank;
  int32_t pos;   // index of the left symbol
  int32_t left;  // ids when pushed; the entry is stale if they changed
  int32_t right;
  int32_t merged;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

void BpeMerger::add_pair(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  pairs_[key(left, right)] = PairInfo{rank, merged};
}

const BpeMerger::PairInfo* BpeMerger::find(int32_t left, int32_t right) const {
  const auto it = pairs_.find(key(left, right));
  return it == pairs_.end() ? nullptr : &it->second;
}

void BpeMerger::merge(std::vector<int32_t>& symbols) const {
  if (symbols.size() <= kQuadraticMaxSymbols) {
    merge_quadratic(symbols);
  } else {
    merge_heap(symbols);
  }
}

void BpeMerger::merge_quadratic(std::vector<int32_t>& symbols) const {
  while (symbols.size() >= 2) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    std::size_t best = symbols.size();
    int32_t best_merged = -1;
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
      const PairInfo* p = find(symbols[i], symbols[i + 1]);
      if (p != nullptr && (best == symbols.size() || p->rank < best_rank)) {
        best_rank = p->rank;
        best = i;
        best_merged = p->merged;
      }
    }
    if (best == symbols.size()) break;
    symbols[best] = best_merged;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
}

void BpeMerger::merge_heap(std::vector<int32_t>& symbols) const {
  const auto n = static_cast<int32_t>(symbols.size());
  if (n < 2) return;
  std::vector<int32_t> id = symbols;  // -1 marks a symbol absorbed by its left neighbour
  std::vector<int32_t> prev(static_cast<std::size_t>(n)), next(static_cast<std::size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    prev[static_cast<std::size_t>(i)] = i - 1;
    next[static_cast<std::size_t>(i)] = i + 1;  // n = none
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int32_t i) {
    const int32_t j = next[static_cast<std::size_t>(i)];
    if (j >= n) return;
    const int32_t a = id[static_cast<std::size_t>(i)], b = id[static_cast<std::size_t>(j)];
    if (const PairInfo* p = find(a, b)) heap.push(Candidate{p->rank, i, a, b, p->merged});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const auto i = static_cast<std::size_t>(c.pos);
    if (id[i] != c.left) continue;
    const int32_t j = next[i];
    if (j >= n || id[static_cast<std::size_t>(j)] != c.right) continue;
    id[i] = c.merged;
    id[static_cast<std::size_t>(j)] = -1;
    const int32_t k = next[static_cast<std::size_t>(j)];
    next[i] = k;
    if (k < n) prev[static_cast<std::size_t>(k)] = c.pos;
    if (prev[i] >= 0) push(prev[i]);
    push(c.pos);
  }
  symbols.clear();
  for (int32_t i = 0; i < n; i = next[static_cast<std::size_t>(i)]) symbols.push_back(id[static_cast<std::size_t>(i)]);
}

bool WordCache::get(std::string_view word, std::vector<int32_t>& out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = map_.find(word);
  if (it == map_.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::put(std::string_view word, const std::vector<int32_t>& ids) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (map_.size() >= capacity_) map_.clear();
  map_.emplace(std::string(word), ids);
}

}  // namespace angelslim
