// A minimal parallel loop over independent tasks (per-linear work of a layer): worker threads pull indices from a
// shared counter; the first exception is rethrown on the calling thread after all workers stop.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
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

// Runs produce(i) for i in [0, n) on `workers` threads and consume(i, result) on the calling thread in index order,
// as soon as each result is ready, so consuming overlaps producing. At most `window` results wait to be consumed (a
// worker does not start index i before i - window was consumed). produce must be safe to run concurrently for distinct
// i and with consume of other indices. The first exception (from either side) stops the handing out of work and is
// rethrown on the calling thread after all workers stop. workers <= 1: produce and consume alternate inline.
template <class Produce, class Consume>
void ordered_pipeline(int64_t n, int workers, int64_t window, Produce&& produce, Consume&& consume) {
  using T = decltype(produce(int64_t{0}));
  if (workers <= 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) consume(i, produce(i));
    return;
  }
  window = std::max<int64_t>(window, 1);
  std::vector<std::unique_ptr<T>> ready(static_cast<std::size_t>(n));
  std::mutex mu;
  std::condition_variable cv;
  int64_t next = 0, consumed = 0;
  bool stop = false;
  std::exception_ptr error;
  auto fail = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mu);
    if (!error) error = e;
    stop = true;
    cv.notify_all();
  };
  auto work = [&] {
    for (;;) {
      int64_t i;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || next >= n || next < consumed + window; });
        if (stop || next >= n) return;
        i = next++;
      }
      try {
        auto r = std::make_unique<T>(produce(i));
        std::lock_guard<std::mutex> lock(mu);
        ready[static_cast<std::size_t>(i)] = std::move(r);
        cv.notify_all();
      } catch (...) {
        fail(std::current_exception());
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::min<int64_t>(workers, n); ++t) pool.emplace_back(work);
  try {
    for (int64_t i = 0; i < n; ++i) {
      std::unique_ptr<T> r;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || ready[static_cast<std::size_t>(i)] != nullptr; });
        if (stop) break;
        r = std::move(ready[static_cast<std::size_t>(i)]);
      }
      consume(i, std::move(*r));
      std::lock_guard<std::mutex> lock(mu);
      consumed = i + 1;
      cv.notify_all();
    }
  } catch (...) {
    fail(std::current_exception());
  }
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace angelslim
