// ordered_pipeline (core/parallel.h): results consumed in index order whatever order the workers finish in, at most
// `window` results ahead of the consumer, and exceptions from either side rethrown without a hang.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "angelslim/core/parallel.h"

namespace angelslim {
namespace {

// Index i sleeps a varying time, so later indices often finish first.
int64_t slow_square(int64_t i) {
  std::this_thread::sleep_for(std::chrono::microseconds(((i * 7919) % 13) * 300));
  return i * i;
}

TEST(OrderedPipeline, ConsumesInIndexOrderWithinTheWindow) {
  for (const int workers : {1, 2, 5}) {
    const int64_t n = 60, window = 3;
    std::atomic<int64_t> started{0}, consumed{0}, max_ahead{0};
    std::vector<int64_t> order;
    ordered_pipeline(
        n, workers, window,
        [&](int64_t i) {
          const int64_t ahead = ++started - consumed.load();
          int64_t m = max_ahead.load();
          while (ahead > m && !max_ahead.compare_exchange_weak(m, ahead)) {
          }
          return slow_square(i);
        },
        [&](int64_t i, int64_t v) {
          EXPECT_EQ(v, i * i) << "workers " << workers;
          order.push_back(i);
          ++consumed;
        });
    ASSERT_EQ(order.size(), static_cast<std::size_t>(n)) << "workers " << workers;
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(order[static_cast<std::size_t>(i)], i) << "workers " << workers;
    // A worker starts index i only once i - window was consumed: at most window + 1 started and not consumed
    // (the one being consumed counts until consume returns).
    EXPECT_LE(max_ahead.load(), window + 1) << "workers " << workers;
  }
}

TEST(OrderedPipeline, ProducerExceptionIsRethrown) {
  for (const int workers : {1, 4}) {
    std::vector<int64_t> order;
    EXPECT_THROW(ordered_pipeline(
                     40, workers, 8,
                     [](int64_t i) {
                       if (i == 17) throw std::runtime_error("produce 17");
                       return slow_square(i);
                     },
                     [&](int64_t i, int64_t) { order.push_back(i); }),
                 std::runtime_error);
    // Nothing at or past the failed index was consumed.
    for (const int64_t i : order) EXPECT_LT(i, 17) << "workers " << workers;
  }
}

TEST(OrderedPipeline, ConsumerExceptionStopsTheWorkers) {
  for (const int workers : {1, 4}) {
    std::atomic<int64_t> produced{0};
    EXPECT_THROW(ordered_pipeline(
                     1000, workers, 4,
                     [&](int64_t i) {
                       ++produced;
                       return slow_square(i % 3);
                     },
                     [](int64_t i, int64_t) {
                       if (i == 5) throw std::runtime_error("consume 5");
                     }),
                 std::runtime_error);
    EXPECT_LE(produced.load(), 5 + 4 + workers) << "workers " << workers << ": work stops at the window";
  }
}

}  // namespace
}  // namespace angelslim
