// Byte-level BPE merging over token ids, shared by tokenizer.json BPE and tiktoken (SPEC 1.6.1 step 4,
// 1.6.2 step 4): lowest rank first, leftmost first; a heap over a linked list keeps long words O(n log n).
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace angelslim {

class BpeMerger {
 public:
  struct PairInfo {
    int32_t rank;    // lower merges first
    int32_t merged;  // id of the concatenated token
  };

  // Adds (or replaces) the merge left+right -> merged with the given rank.
  void add_pair(int32_t left, int32_t right, int32_t rank, int32_t merged);
  std::size_t size() const { return pairs_.size(); }
  const PairInfo* find(int32_t left, int32_t right) const;

  // symbols: ids of the initial symbols (one per byte) of one word; replaced by the merged ids.
  void merge(std::vector<int32_t>& symbols) const;
  // Same result by rescanning every adjacent pair after each merge (O(n^2)); used for short words.
  void merge_quadratic(std::vector<int32_t>& symbols) const;
  // The heap/linked-list algorithm regardless of length (exposed so tests can compare the two).
  void merge_heap(std::vector<int32_t>& symbols) const;

 private:
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, PairInfo> pairs_;
};

// Thread-safe cache word bytes -> ids. Cleared when it reaches `capacity` entries.
class WordCache {
 public:
  explicit WordCache(std::size_t capacity = std::size_t{1} << 18) : capacity_(capacity) {}
  // Appends the cached ids of `word` to `out`; false when absent.
  bool get(std::string_view word, std::vector<int32_t>& out) const;
  void put(std::string_view word, const std::vector<int32_t>& ids) const;

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::size_t capacity_;
  mutable std::mutex mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> map_;
};

}  // namespace angelslim
