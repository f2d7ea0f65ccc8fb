// Helpers of the GPU parity tests (tests/gpu): skip without a device, one shared context, random data, error norms
// (relative L2, max-abs, bf16 ulps, non-finite count), NaN-poisoned outputs with guard zones, op-coverage registry.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "angelslim/backend/cuda_ops.h"
#include "angelslim/core/dtype.h"

namespace angelslim::gputest {

inline bool has_gpu() {
  static const bool b = cuda::device_count() > 0;
  return b;
}

// One context for the whole test binary (stream + cuBLAS handle creation costs ~100 ms).
inline cuda::CudaContext& ctx() {
  static cuda::CudaContext c(0);
  return c;
}

#define ANGELSLIM_REQUIRE_GPU()                                                                                \
  do {                                                                                                         \
    if (!::angelslim::gputest::has_gpu()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount = 0 or failed)"; \
  } while (0)

// Uniform values in [lo, hi), never exactly zero; bf16: rounded to bf16 (inputs of bf16-mode checks).
inline std::vector<float> random_vec(std::size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f,
                                     bool bf16 = false) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) {
    do {
      x = u(rng);
      if (bf16) x = round_bf16(x);
    } while (x == 0.0f);
  }
  return v;
}

struct ErrorStats {
  double rel_l2 = 0.0;    // ||got - ref|| / ||ref||
  double max_abs = 0.0;   // max |got - ref|
  double max_ulps = 0.0;  // max |got - ref| in bf16 ulps of max(|ref|, |got|) (for bf16-valued outputs)
  int64_t n = 0;
  int64_t n_nonfinite = 0;  // non-finite values in got where ref is finite
  int64_t n_diff = 0;       // elements not bitwise equal
};

inline double bf16_ulp(float ref) {
  const float a = std::fabs(ref);
  if (a < 1e-30f) return 1e-30;
  int e;
  std::frexp(a, &e);                  // a = m·2^e, m in [0.5, 1)
  return std::ldexp(1.0, e - 1 - 7);  // 8 significant bits
}

inline ErrorStats compare(const std::vector<float>& got, const std::vector<float>& ref) {
  ErrorStats s;
  s.n = static_cast<int64_t>(ref.size());
  if (got.size() != ref.size()) {
    s.n_nonfinite = s.n;
    s.rel_l2 = INFINITY;
    return s;
  }
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], g = got[i];
    if (std::isfinite(r) && !std::isfinite(g)) ++s.n_nonfinite;
    if (f32_to_bits(got[i]) != f32_to_bits(ref[i])) ++s.n_diff;
    if (!std::isfinite(r) || !std::isfinite(g)) continue;
    const double d = std::fabs(g - r);
    num += d * d;
    den += r * r;
    s.max_abs = std::max(s.max_abs, d);
    // In ulps of the larger magnitude (a reference of exactly 0 has no ulp of its own).
    s.max_ulps = std::max(s.max_ulps, d / bf16_ulp(std::max(std::fabs(ref[i]), std::fabs(got[i]))));
  }
  s.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return s;
}

// One report line per comparison (the GPU run's log is the per-op error table).
inline void report(const std::string& what, const ErrorStats& s) {
  std::printf("[gpu-parity] %-58s n=%-9lld rel_l2=%.3e max_abs=%.3e max_ulps=%.1f diff=%lld nonfinite=%lld\n",
              what.c_str(), static_cast<long long>(s.n), s.rel_l2, s.max_abs, s.max_ulps,
              static_cast<long long>(s.n_diff), static_cast<long long>(s.n_nonfinite));
}

// Finite everywhere and within tol (relative L2).
#define EXPECT_CLOSE(what, stats, tol)                                       \
  do {                                                                       \
    const auto& s_ = (stats);                                                \
    ::angelslim::gputest::report((what), s_);                                \
    EXPECT_EQ(s_.n_nonfinite, 0) << (what) << ": NaN/Inf in the GPU output"; \
    EXPECT_LE(s_.rel_l2, (tol)) << (what);                                   \
  } while (0)

// Bitwise equal.
#define EXPECT_EXACT(what, stats)                                            \
  do {                                                                       \
    const auto& s_ = (stats);                                                \
    ::angelslim::gputest::report((what), s_);                                \
    EXPECT_EQ(s_.n_nonfinite, 0) << (what) << ": NaN/Inf in the GPU output"; \
    EXPECT_EQ(s_.n_diff, 0) << (what) << ": max_abs " << s_.max_abs;         \
  } while (0)

// bf16-mode elementwise results: at most max_ulps bf16 ulps apart anywhere, and at most frac of the elements differ
// (a 1-ulp flip happens when the fp32 value before rounding differs by one fp32 ulp and sits at a rounding edge).
#define EXPECT_BF16_NEAR(what, stats, max_ulps_, frac)                                       \
  do {                                                                                       \
    const auto& s_ = (stats);                                                                \
    ::angelslim::gputest::report((what), s_);                                                \
    EXPECT_EQ(s_.n_nonfinite, 0) << (what) << ": NaN/Inf in the GPU output";                 \
    EXPECT_LE(s_.max_ulps, (max_ulps_)) << (what);                                           \
    EXPECT_LE(static_cast<double>(s_.n_diff), (frac) * static_cast<double>(s_.n)) << (what); \
  } while (0)

// A device output of n elements between two guard zones; everything starts as a NaN pattern so an element the op
// forgets to write shows up as NaN, and a write outside [0, n) changes a guard.
template <class T>
class Guarded {
 public:
  static constexpr std::size_t kGuard = 64;
  explicit Guarded(std::size_t n) : n_(n), buf_(n + 2 * kGuard) {
    std::vector<T> poison(n + 2 * kGuard);
    std::memset(poison.data(), 0xff, poison.size() * sizeof(T));  // NaN for floats, -1 for integers
    cuda::upload(ctx(), poison.data(), poison.size(), buf_.data());
  }
  // Starts from given values instead (in-place ops).
  explicit Guarded(const std::vector<T>& init) : Guarded(init.size()) {
    cuda::upload(ctx(), init.data(), init.size(), data());
  }
  T* data() { return buf_.data() + kGuard; }
  std::size_t size() const { return n_; }
  std::vector<T> read() { return cuda::to_host(ctx(), buf_.data() + kGuard, n_); }
  // True when both guard zones still hold the poison pattern.
  bool guards_intact() {
    const auto all = cuda::to_host(ctx(), buf_.data(), buf_.size());
    const auto* bytes = reinterpret_cast<const unsigned char*>(all.data());
    const std::size_t g = kGuard * sizeof(T), tail = (kGuard + n_) * sizeof(T);
    for (std::size_t i = 0; i < g; ++i)
      if (bytes[i] != 0xff || bytes[tail + i] != 0xff) return false;
    return true;
  }

 private:
  std::size_t n_;
  cuda::DeviceBuffer<T> buf_;
};

// Op-coverage registry: every GPU_OP_TEST names the cuda_ops.h op it checks; a harness test fails when an op
// declared in the header has no test.
inline std::set<std::string>& covered_ops() {
  static std::set<std::string> s;
  return s;
}
struct OpRegistrar {
  explicit OpRegistrar(const char* op) { covered_ops().insert(op); }
};

#define GPU_OP_TEST(op, name)                                                            \
  static const ::angelslim::gputest::OpRegistrar angelslim_registrar_##op##_##name(#op); \
  TEST(CudaOps_##op, name)

}  // namespace angelslim::gputest
