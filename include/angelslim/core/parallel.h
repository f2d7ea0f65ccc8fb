// A minimal parallel loop over independent tasks (per-linear work of a layer): worker threads pull indices from a
// shared counter; the first exception is rethrown on the calling thread after all workers stop.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace angelslim {

// Calls fn(i) for i in [0, n) on up to max_threads threads (0: hardware concurrency, at most 8); fn must be safe to
// run concurrently for distinct i. Runs inline when n <= 1 or one thread is asked for.
template <class Fn>
void parallel_for(int64_t n, Fn&& fn, int max_threads = 0) {
  unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  unsigned threads = max_threads > 0 ? static_cast<unsigned>(max_threads) : std::min(hw, 8u);
  threads = static_cast<unsigned>(std::min<int64_t>(threads, n));
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex mu;
  auto work = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < n;) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        next.store(n);  // stop handing out work
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace angelslim
