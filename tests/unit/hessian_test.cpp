// LayerStats::take and Hessian (calib/stats.h): a Gram matrix kept on a device gives, when the host asks for it, the
// very H the host path forms (the same FP32 product), downloaded once however many threads ask; the host path
// hands its matrix over unchanged. The device is stood in for by a host-backed DeviceMatrix that counts downloads.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "angelslim/calib/stats.h"
#include "unit/host_backed_matrix.h"

namespace angelslim {
namespace {

using test::HostBackedMatrix;

std::vector<float> random_gram(int k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> g(static_cast<std::size_t>(k) * k);
  for (int r = 0; r < k; ++r)
    for (int c = 0; c <= r; ++c)
      g[static_cast<std::size_t>(r) * k + c] = g[static_cast<std::size_t>(c) * k + r] =
          r == c ? 50.0f + nd(rng) : nd(rng);
  return g;
}

TEST(Hessian, DeviceGramGivesTheHostHessianOnce) {
  const int k = 37;
  const int64_t tokens = 11;  // 2/11 is not a power of two: the product rounds
  const auto g = random_gram(k, 5);
  const LinearId q{0, LinearKind::kQ}, kp{0, LinearKind::kK}, v{0, LinearKind::kV};

  LayerStats host_stats;
  host_stats.gram[input_group(q)] = LayerStats::Gram{k, tokens, g, nullptr};
  int64_t t = 0;
  const std::vector<float> want = host_stats.take_hessian(q, &t);
  ASSERT_EQ(t, tokens);
  ASSERT_EQ(want.size(), g.size());

  std::atomic<int> downloads{0};
  auto dev = std::make_shared<HostBackedMatrix>(k, k, g, &downloads);
  LayerStats dev_stats;
  dev_stats.gram[input_group(q)] = LayerStats::Gram{k, tokens, {}, dev};
  const Hessian h = dev_stats.take(kp);  // any member of the group finds it
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h.k(), k);
  EXPECT_EQ(h.tokens(), tokens);
  ASSERT_EQ(h.device(), dev.get());
  EXPECT_EQ(h.scale(), 2.0f / static_cast<float>(tokens));
  EXPECT_EQ(downloads.load(), 0) << "nothing is downloaded before the host asks";
  EXPECT_TRUE(dev_stats.take(v).empty()) << "taken: moved out";

  const Hessian copy = h;  // copies share the host copy
  std::vector<std::thread> threads;
  std::atomic<int> equal{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      const auto got = (i % 2 ? copy : h).host();
      if (std::equal(got.begin(), got.end(), want.begin(), want.end())) ++equal;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(equal.load(), 8) << "the device route forms the host route's H bit for bit";
  EXPECT_EQ(downloads.load(), 1);

  // The host route through take(): the same H, no device.
  LayerStats host2;
  host2.gram[input_group(q)] = LayerStats::Gram{k, tokens, g, nullptr};
  const Hessian hh = host2.take(q);
  EXPECT_EQ(hh.device(), nullptr);
  const auto hv = hh.host();
  EXPECT_TRUE(std::equal(hv.begin(), hv.end(), want.begin(), want.end()));

  // take_hessian of a device Gram matrix downloads it and forms the same H.
  std::atomic<int> downloads2{0};
  auto dev2 = std::make_shared<HostBackedMatrix>(k, k, g, &downloads2);
  LayerStats dev_stats2;
  dev_stats2.gram[input_group(q)] = LayerStats::Gram{k, tokens, {}, dev2};
  EXPECT_EQ(dev_stats2.take_hessian(q, &t), want);
  EXPECT_EQ(downloads2.load(), 1);

  // No token: empty either way.
  LayerStats none;
  none.gram[input_group(q)] = LayerStats::Gram{k, 0, {}, nullptr};
  EXPECT_TRUE(none.take(q).empty());
  EXPECT_TRUE(LayerStats{}.take(q).empty());
}

}  // namespace
}  // namespace angelslim
