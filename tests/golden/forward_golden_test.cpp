// CPU forward pass vs the transformers fp32 reference goldens of both fixtures.
// Tolerances (issue 2): relative L2 error of logits <= 1e-4; every per-token NLL within 1e-3.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan.h"

namespace angelslim {
namespace {

const std::string kData = ANGELSLIM_TEST_DATA;

std::vector<int32_t> ids_of(const TensorView& t) {
  std::vector<int32_t> v(static_cast<std::size_t>(t.numel()));
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

void check_fixture(const std::string& name) {
  HunyuanModel model(kData + "/fixtures/" + name);
  SafetensorsFile golden(kData + "/fixtures/" + name + ".golden-fp32.safetensors");
  const auto& g = golden.tensors();
  for (const std::string c : {"short", "chat", "long"}) {
    SCOPED_TRACE(name + "/" + c);
    const auto ids = ids_of(g.at(c + ".input_ids"));
    const int64_t n = static_cast<int64_t>(ids.size());
    const auto logits = model.logits(ids.data(), n);
    if (g.count(c + ".logits")) {
      const auto ref = g.at(c + ".logits").to_f32();
      ASSERT_EQ(ref.size(), logits.size());
      double num = 0, den = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        num += (logits[i] - ref[i]) * double(logits[i] - ref[i]);
        den += ref[i] * double(ref[i]);
      }
      const double rel = std::sqrt(num / den);
      std::printf("%s/%s logits rel L2 = %.3e\n", name.c_str(), c.c_str(), rel);
      EXPECT_LE(rel, 1e-4);
    }
    const auto nll = model.nll(ids.data(), n);
    const auto ref_nll = g.at(c + ".nll").to_f32();
    ASSERT_EQ(ref_nll.size(), nll.size());
    double worst = 0;
    for (std::size_t i = 0; i < nll.size(); ++i) worst = std::max(worst, double(std::fabs(nll[i] - ref_nll[i])));
    std::printf("%s/%s max |dNLL| = %.3e over %zu tokens\n", name.c_str(), c.c_str(), worst, nll.size());
    EXPECT_LE(worst, 1e-3);
    // argmax agreement as a sanity check of the logits layout (every position)
    const auto argmax = ids_of(g.at(c + ".argmax"));
    int64_t agree = 0;
    for (int64_t t = 0; t < n; ++t) {
      const float* row = logits.data() + t * model.config().vocab_size;
      const auto best = std::max_element(row, row + model.config().vocab_size) - row;
      agree += best == argmax[static_cast<std::size_t>(t)];
    }
    EXPECT_GE(agree, n - 1) << "argmax disagreements beyond one near-tie";
  }
}

TEST(ForwardGolden, DenseTiny) { check_fixture("hy-dense-tiny"); }
TEST(ForwardGolden, MoeTiny) { check_fixture("hy-moe-tiny"); }

}  // namespace
}  // namespace angelslim
