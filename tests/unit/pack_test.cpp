// GPTQ v1 and AWQ GEMM packing: the hand-worked words of SPEC 5.3.2 / 5.4 and random round trips.
#include "angelslim/quant/pack.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "angelslim/core/error.h"
#include "angelslim/quant/grid.h"

namespace angelslim {
namespace {

std::vector<uint8_t> le_bytes(int32_t v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);  // x86-64 and the safetensors files are little-endian
  return b;
}

TEST(PackGptq, Int4WorkedExample) {
  // One output column (N = 8 so that qzeros is packable), input rows k = 0..7 of column n = 3.
  const int n_out = 8, n_in = 8;
  const std::vector<uint8_t> col = {8, 15, 0, 7, 9, 3, 12, 8};
  std::vector<uint8_t> codes(n_out * n_in, 8);
  for (int k = 0; k < n_in; ++k) codes[3 * n_in + k] = col[k];  // codes[n, k] = q[k, n]
  const std::vector<int32_t> qw = pack_gptq_qweight(codes, n_out, n_in, 4);
  ASSERT_EQ(qw.size(), 8u);  // [K/8 = 1, N = 8]
  EXPECT_EQ(static_cast<uint32_t>(qw[3]), 0x8C3970F8u);
  EXPECT_EQ(qw[3], -1942392584);
  EXPECT_EQ(le_bytes(qw[3]), (std::vector<uint8_t>{0xf8, 0x70, 0x39, 0x8c}));
  EXPECT_EQ(static_cast<uint32_t>(qw[0]), 0x88888888u);
  // Dequantize with S = 0.01, Z = 8 (SPEC's values).
  const GroupParams p{0.01f, 8};
  const std::vector<float> expect = {0.0f, 0.07f, -0.08f, -0.01f, 0.01f, -0.05f, 0.04f, 0.0f};
  const std::vector<uint8_t> back = unpack_gptq_qweight(qw, n_out, n_in, 4);
  for (int k = 0; k < n_in; ++k) EXPECT_NEAR(dequantize_code(back[3 * n_in + k], p), expect[k], 1e-7f) << k;
  // Symmetric zeros (8) are stored as 7 in every nibble.
  const std::vector<int32_t> zeros(n_out * 2, 8);  // [N, G = 2]
  const std::vector<int32_t> qz = pack_gptq_qzeros(zeros, n_out, 2, 4);
  ASSERT_EQ(qz.size(), 2u);                       // [G = 2, N/8 = 1]
  for (int32_t v : qz) EXPECT_EQ(v, 2004318071);  // 0x77777777
  EXPECT_EQ(unpack_gptq_qzeros(qz, n_out, 2, 4), zeros);
}

TEST(PackGptq, Int8WorkedExample) {
  const int n_out = 4, n_in = 4;
  std::vector<uint8_t> codes(n_out * n_in, 128);
  const std::vector<uint8_t> col = {128, 255, 0, 100};
  for (int k = 0; k < n_in; ++k) codes[0 * n_in + k] = col[k];
  const std::vector<int32_t> qw = pack_gptq_qweight(codes, n_out, n_in, 8);
  ASSERT_EQ(qw.size(), 4u);
  EXPECT_EQ(static_cast<uint32_t>(qw[0]), 0x6400FF80u);
  EXPECT_EQ(le_bytes(qw[0]), (std::vector<uint8_t>{0x80, 0xff, 0x00, 0x64}));
  const std::vector<int32_t> zeros(n_out * 3, 128);
  const std::vector<int32_t> qz = pack_gptq_qzeros(zeros, n_out, 3, 8);
  ASSERT_EQ(qz.size(), 3u);
  for (int32_t v : qz) EXPECT_EQ(v, 2139062143);  // 0x7F7F7F7F
}

TEST(PackGptq, ZeroOfZeroIsRejected) {
  std::vector<int32_t> zeros(8, 8);
  zeros[5] = 0;  // asymmetric zero 0: zero - 1 = -1 does not fit (SPEC 5.3.4)
  EXPECT_THROW(pack_gptq_qzeros(zeros, 8, 1, 4), InvalidInput);
  zeros[5] = 17;
  EXPECT_THROW(pack_gptq_qzeros(zeros, 8, 1, 4), InvalidInput);
  std::vector<uint8_t> codes(8 * 8, 16);
  EXPECT_THROW(pack_gptq_qweight(codes, 8, 8, 4), InvalidInput);
  EXPECT_THROW(pack_gptq_qweight(std::vector<uint8_t>(8 * 12, 1), 8, 12, 4), InvalidInput);  // 12 % 8
  EXPECT_THROW(pack_gptq_qweight(std::vector<uint8_t>(8 * 8, 1), 8, 8, 3), Unsupported);
}

TEST(PackAwq, WorkedExample) {
  const int n_out = 8, n_in = 2;
  const std::vector<uint8_t> row = {8, 15, 0, 7, 9, 3, 12, 8};  // q[k = 1, n = 0..7]
  std::vector<uint8_t> codes(n_out * n_in, 0);
  for (int n = 0; n < n_out; ++n) codes[n * n_in + 1] = row[n];
  const std::vector<int32_t> qw = pack_awq_qweight(codes, n_out, n_in);
  ASSERT_EQ(qw.size(), 2u);  // [K = 2, N/8 = 1]
  EXPECT_EQ(qw[0], 0);
  EXPECT_EQ(static_cast<uint32_t>(qw[1]), 0x837FC908u);
  EXPECT_EQ(qw[1], -2088777464);
  EXPECT_EQ(le_bytes(qw[1]), (std::vector<uint8_t>{0x08, 0xc9, 0x7f, 0x83}));
  EXPECT_EQ(unpack_awq_qweight(qw, n_out, n_in), codes);
  const std::vector<int32_t> zeros = {7, 8, 8, 9, 6, 8, 10, 8};  // [N = 8, G = 1]
  const std::vector<int32_t> qz = pack_awq_qzeros(zeros, n_out, 1);
  ASSERT_EQ(qz.size(), 1u);
  EXPECT_EQ(static_cast<uint32_t>(qz[0]), 0x8898A687u);
  EXPECT_EQ(unpack_awq_qzeros(qz, n_out, 1), zeros);
  // Order tables are inverse permutations.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(kAwqInverseOrder[kAwqOrder[i]], i);
}

TEST(Pack, RandomRoundTrips) {
  std::mt19937 rng(5);
  const int n_out = 24, n_in = 64, n_groups = 4;
  for (int bits : {4, 8}) {
    std::uniform_int_distribution<int> cd(0, (1 << bits) - 1), zd(1, 1 << bits);
    std::vector<uint8_t> codes(n_out * n_in);
    for (auto& c : codes) c = static_cast<uint8_t>(cd(rng));
    std::vector<int32_t> zeros(n_out * n_groups);
    for (auto& z : zeros) z = zd(rng);
    const auto qw = pack_gptq_qweight(codes, n_out, n_in, bits);
    EXPECT_EQ(qw.size(), static_cast<std::size_t>(n_in / (32 / bits) * n_out));
    EXPECT_EQ(unpack_gptq_qweight(qw, n_out, n_in, bits), codes);
    const auto qz = pack_gptq_qzeros(zeros, n_out, n_groups, bits);
    EXPECT_EQ(qz.size(), static_cast<std::size_t>(n_groups * n_out / (32 / bits)));
    EXPECT_EQ(unpack_gptq_qzeros(qz, n_out, n_groups, bits), zeros);
    // Direct bit check of one random element: q[k, n] sits at bits b*(k % P) of word [k / P, n].
    const int p = 32 / bits;
    for (int t = 0; t < 50; ++t) {
      const int n = static_cast<int>(rng() % n_out), k = static_cast<int>(rng() % n_in);
      const uint32_t word = static_cast<uint32_t>(qw[(k / p) * n_out + n]);
      EXPECT_EQ((word >> (bits * (k % p))) & ((1u << bits) - 1u), codes[n * n_in + k]);
    }
  }
  std::uniform_int_distribution<int> c4(0, 15);
  std::vector<uint8_t> codes(n_out * n_in);
  for (auto& c : codes) c = static_cast<uint8_t>(c4(rng));
  std::vector<int32_t> zeros(n_out * n_groups);
  for (auto& z : zeros) z = c4(rng);
  const auto qw = pack_awq_qweight(codes, n_out, n_in);
  EXPECT_EQ(unpack_awq_qweight(qw, n_out, n_in), codes);
  EXPECT_EQ(unpack_awq_qzeros(pack_awq_qzeros(zeros, n_out, n_groups), n_out, n_groups), zeros);
  for (int t = 0; t < 50; ++t) {
    const int n = static_cast<int>(rng() % n_out), k = static_cast<int>(rng() % n_in);
    const uint32_t word = static_cast<uint32_t>(qw[k * (n_out / 8) + n / 8]);
    EXPECT_EQ((word >> (4 * kAwqInverseOrder[n % 8])) & 15u, codes[n * n_in + k]);
  }
}

// The packers work in cache tiles on several threads: every word of shapes that cross and do not fill the tiles
// (GPTQ: 16 output columns x 64 packed rows; AWQ: 16 words x 64 input columns) against SPEC 5.3.2 / 5.4's bit
// positions, and an out-of-range code is named at its first row-major position.
TEST(Pack, TiledPackingMatchesTheLayoutFormulas) {
  std::mt19937 rng(9);
  for (const int bits : {4, 8}) {
    const int n_out = 40, n_in = 560, p = 32 / bits;
    std::vector<uint8_t> codes(static_cast<std::size_t>(n_out) * n_in);
    for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1u));
    const auto qw = pack_gptq_qweight(codes, n_out, n_in, bits);
    ASSERT_EQ(qw.size(), static_cast<std::size_t>(n_in / p) * n_out);
    for (int n = 0; n < n_out; ++n)
      for (int k = 0; k < n_in; ++k) {
        const uint32_t word = static_cast<uint32_t>(qw[static_cast<std::size_t>(k / p) * n_out + n]);
        ASSERT_EQ((word >> (bits * (k % p))) & ((1u << bits) - 1u), codes[static_cast<std::size_t>(n) * n_in + k])
            << "bits " << bits << " [" << n << ", " << k << "]";
      }
    if (bits == 4) {
      codes[static_cast<std::size_t>(37) * n_in + 500] = 16;
      codes[static_cast<std::size_t>(3) * n_in + 11] = 200;
      try {
        pack_gptq_qweight(codes, n_out, n_in, bits);
        FAIL() << "expected InvalidInput";
      } catch (const InvalidInput& e) {
        EXPECT_NE(std::string(e.what()).find("gptq code 200 at [3, 11] exceeds 4 bits"), std::string::npos) << e.what();
      }
    }
  }
  const int n_out = 8 * 37, n_in = 130;
  std::vector<uint8_t> codes(static_cast<std::size_t>(n_out) * n_in);
  for (auto& c : codes) c = static_cast<uint8_t>(rng() & 15u);
  const auto qw = pack_awq_qweight(codes, n_out, n_in);
  ASSERT_EQ(qw.size(), static_cast<std::size_t>(n_in) * (n_out / 8));
  for (int n = 0; n < n_out; ++n)
    for (int k = 0; k < n_in; ++k) {
      const uint32_t word = static_cast<uint32_t>(qw[static_cast<std::size_t>(k) * (n_out / 8) + n / 8]);
      ASSERT_EQ((word >> (4 * kAwqInverseOrder[n % 8])) & 15u, codes[static_cast<std::size_t>(n) * n_in + k])
          << "[" << n << ", " << k << "]";
    }
  codes[static_cast<std::size_t>(290) * n_in + 3] = 17;
  codes[static_cast<std::size_t>(200) * n_in + 129] = 99;
  try {
    pack_awq_qweight(codes, n_out, n_in);
    FAIL() << "expected InvalidInput";
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("awq code 99 at [200, 129] exceeds 4 bits"), std::string::npos) << e.what();
  }
}

TEST(Pack, RtnThroughCheckpointLayoutDequantizes) {
  // Quantize with GPTQ-sym, pack as GPTQ v1, then dequantize from the checkpoint tensors with SPEC 5.3.2's
  // formula W[n, k] = (q[k, n] - Z) * S[g_idx[k], n]: must equal the quantizer's dequantized matrix exactly.
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const int n_out = 16, n_in = 128, g = 32;
  std::vector<float> w(n_out * n_in);
  for (float& v : w) v = nd(rng);
  const QuantizedMatrix q = rtn_quantize(w, n_out, n_in, GridSpec{GridKind::kGptqSym, 4, g, ScaleDType::kBF16});
  const auto qweight = pack_gptq_qweight(q.codes, n_out, n_in, 4);
  const auto qzeros = pack_gptq_qzeros(q.zeros, n_out, q.n_groups, 4);
  const auto scales = transpose_scales(q.scales, n_out, q.n_groups);  // [K/g, N]
  for (int k = 0; k < n_in; ++k)
    for (int n = 0; n < n_out; ++n) {
      const int code = (static_cast<uint32_t>(qweight[(k / 8) * n_out + n]) >> (4 * (k % 8))) & 15;
      const int zero = ((static_cast<uint32_t>(qzeros[(k / g) * (n_out / 8) + n / 8]) >> (4 * (n % 8))) & 15) + 1;
      EXPECT_EQ((code - zero) * scales[(k / g) * n_out + n], q.dequant[n * n_in + k]);
    }
}

}  // namespace
}  // namespace angelslim
