// GPTQ v1 and AWQ GEMM packing; see include/angelslim/quant/pack.h and SPEC 5.3.2 / 5.4.
#include "angelslim/quant/pack.h"

#include <algorithm>

#include "angelslim/core/error.h"
#include "angelslim/core/parallel.h"

namespace angelslim {

namespace {

int pack_factor(int bits) {
  ANGELSLIM_CHECK(bits == 4 || bits == 8, Unsupported, "packing supports 4 or 8 bits, got {}", bits);
  return 32 / bits;
}

void check_size(std::size_t actual, int a, int b, const char* what) {
  ANGELSLIM_CHECK(a >= 1 && b >= 1 && actual == static_cast<std::size_t>(a) * b, InvalidInput,
                  "{} has {} elements, expected {}*{}", what, actual, a, b);
}

void check_divisible(int n, int p, const char* what) {
  ANGELSLIM_CHECK(n % p == 0, InvalidInput, "{} = {} must be a multiple of the pack factor {}", what, n, p);
}

// int32 storage of a packed uint32 word (two's complement, well defined since C++20).
int32_t as_i32(uint32_t u) { return static_cast<int32_t>(u); }
uint32_t as_u32(int32_t i) { return static_cast<uint32_t>(i); }

}  // namespace

std::vector<int32_t> pack_gptq_qweight(std::span<const uint8_t> codes, int n_out, int n_in, int bits) {
  const int p = pack_factor(bits);
  check_size(codes.size(), n_out, n_in, "gptq codes");
  check_divisible(n_in, p, "gptq input dim");
  const int rows = n_in / p;
  const uint32_t qmax = (1u << bits) - 1u;
  std::vector<int32_t> out(static_cast<std::size_t>(rows) * n_out);
  // Tiles of kTileN output columns x kTileR packed rows: the codes of a tile (kTileN rows of kTileR * p bytes) stay
  // in cache and each packed row of the tile is written as one contiguous run. Bands of kBandN columns run on a few
  // threads (wide enough that two threads rarely write the same cache line).
  constexpr int kTileN = 16, kTileR = 64, kBandN = 256;
  const int bands = (n_out + kBandN - 1) / kBandN;
  std::vector<uint32_t> seen(static_cast<std::size_t>(bands), 0);  // OR of the codes of each band
  parallel_for(bands, [&, src = codes.data(), dst = out.data()](int64_t b) {
    // Locals, not the captured references: the int32 stores below could alias them and force reloads.
    const int no = n_out, ni = n_in, nr = rows, pf = p, nb = bits;
    uint32_t any = 0;
    const int b1 = std::min(no, static_cast<int>(b + 1) * kBandN);
    for (int n0 = static_cast<int>(b) * kBandN; n0 < b1; n0 += kTileN) {
      const int n1 = std::min(b1, n0 + kTileN);
      for (int r0 = 0; r0 < nr; r0 += kTileR) {
        const int r1 = std::min(nr, r0 + kTileR);
        for (int r = r0; r < r1; ++r)
          for (int n = n0; n < n1; ++n) {
            const uint8_t* q = src + static_cast<std::size_t>(n) * ni + static_cast<std::size_t>(r) * pf;
            uint32_t word = 0;
            for (int j = 0; j < pf; ++j) {
              any |= q[j];
              word |= static_cast<uint32_t>(q[j]) << (nb * j);
            }
            dst[static_cast<std::size_t>(r) * no + n] = as_i32(word);
          }
      }
    }
    seen[static_cast<std::size_t>(b)] = any;
  });
  for (const uint32_t any : seen)
    if (any > qmax)  // name the first offending code in row-major order
      for (int n = 0; n < n_out; ++n)
        for (int k = 0; k < n_in; ++k) {
          const uint32_t c = codes[static_cast<std::size_t>(n) * n_in + k];
          ANGELSLIM_CHECK(c <= qmax, InvalidInput, "gptq code {} at [{}, {}] exceeds {} bits", c, n, k, bits);
        }
  return out;
}

std::vector<uint8_t> unpack_gptq_qweight(std::span<const int32_t> qweight, int n_out, int n_in, int bits) {
  const int p = pack_factor(bits);
  check_divisible(n_in, p, "gptq input dim");
  check_size(qweight.size(), n_in / p, n_out, "gptq qweight");
  const uint32_t mask = (1u << bits) - 1u;
  std::vector<uint8_t> codes(static_cast<std::size_t>(n_out) * n_in);
  for (int r = 0; r < n_in / p; ++r)
    for (int n = 0; n < n_out; ++n) {
      const uint32_t word = as_u32(qweight[static_cast<std::size_t>(r) * n_out + n]);
      for (int j = 0; j < p; ++j)
        codes[static_cast<std::size_t>(n) * n_in + r * p + j] = static_cast<uint8_t>((word >> (bits * j)) & mask);
    }
  return codes;
}

std::vector<int32_t> pack_gptq_qzeros(std::span<const int32_t> zeros, int n_out, int n_groups, int bits) {
  const int p = pack_factor(bits);
  check_size(zeros.size(), n_out, n_groups, "gptq zeros");
  check_divisible(n_out, p, "gptq output dim");
  const int32_t zmax = 1 << bits;
  std::vector<int32_t> out(static_cast<std::size_t>(n_groups) * (n_out / p));
  for (int g = 0; g < n_groups; ++g)
    for (int c = 0; c < n_out / p; ++c) {
      uint32_t word = 0;
      for (int j = 0; j < p; ++j) {
        const int n = c * p + j;
        const int32_t z = zeros[static_cast<std::size_t>(n) * n_groups + g];
        ANGELSLIM_CHECK(z >= 1 && z <= zmax, InvalidInput,
                        "gptq v1 zero {} at [out {}, group {}] not storable as zero-1 in {} bits (expected 1..{})", z,
                        n, g, bits, zmax);
        word |= static_cast<uint32_t>(z - 1) << (bits * j);
      }
      out[static_cast<std::size_t>(g) * (n_out / p) + c] = as_i32(word);
    }
  return out;
}

std::vector<int32_t> unpack_gptq_qzeros(std::span<const int32_t> qzeros, int n_out, int n_groups, int bits) {
  const int p = pack_factor(bits);
  check_divisible(n_out, p, "gptq output dim");
  check_size(qzeros.size(), n_groups, n_out / p, "gptq qzeros");
  const uint32_t mask = (1u << bits) - 1u;
  std::vector<int32_t> zeros(static_cast<std::size_t>(n_out) * n_groups);
  for (int g = 0; g < n_groups; ++g)
    for (int c = 0; c < n_out / p; ++c) {
      const uint32_t word = as_u32(qzeros[static_cast<std::size_t>(g) * (n_out / p) + c]);
      for (int j = 0; j < p; ++j)
        zeros[static_cast<std::size_t>(c * p + j) * n_groups + g] =
            static_cast<int32_t>((word >> (bits * j)) & mask) + 1;
    }
  return zeros;
}

std::vector<int32_t> pack_awq_qweight(std::span<const uint8_t> codes, int n_out, int n_in) {
  check_size(codes.size(), n_out, n_in, "awq codes");
  check_divisible(n_out, 8, "awq output dim");
  const int words = n_out / 8;
  std::vector<int32_t> out(static_cast<std::size_t>(n_in) * words);
  // Tiles of kTileW words (8 * kTileW output rows) x kTileK input columns: the tile's codes stay in cache, each
  // input column of the tile is written as one contiguous run of words. Bands of kBandW words run on a few threads
  // (wide enough that two threads rarely write the same cache line).
  constexpr int kTileW = 16, kTileK = 64, kBandW = 256;
  const int bands = (words + kBandW - 1) / kBandW;
  std::vector<uint32_t> seen(static_cast<std::size_t>(bands), 0);  // OR of the codes of each band
  parallel_for(bands, [&, src = codes.data(), dst = out.data()](int64_t b) {
    // Locals, not the captured references: the int32 stores below could alias them and force reloads.
    const int nw = words;
    const std::size_t ni = static_cast<std::size_t>(n_in);
    uint32_t any = 0;
    const int b1 = std::min(nw, static_cast<int>(b + 1) * kBandW);
    for (int c0 = static_cast<int>(b) * kBandW; c0 < b1; c0 += kTileW) {
      const int c1 = std::min(b1, c0 + kTileW);
      for (int k0 = 0; k0 < static_cast<int>(ni); k0 += kTileK) {
        const int k1 = std::min(static_cast<int>(ni), k0 + kTileK);
        for (int k = k0; k < k1; ++k)
          for (int c = c0; c < c1; ++c) {
            uint32_t word = 0;
            for (int i = 0; i < 8; ++i) {
              const uint32_t q = src[static_cast<std::size_t>(8 * c + kAwqOrder[i]) * ni + static_cast<std::size_t>(k)];
              any |= q;
              word |= q << (4 * i);
            }
            dst[static_cast<std::size_t>(k) * nw + c] = as_i32(word);
          }
      }
    }
    seen[static_cast<std::size_t>(b)] = any;
  });
  for (const uint32_t any : seen)
    if (any > 15u)  // name the first offending code in row-major order
      for (int n = 0; n < n_out; ++n)
        for (int k = 0; k < n_in; ++k) {
          const uint32_t q = codes[static_cast<std::size_t>(n) * n_in + k];
          ANGELSLIM_CHECK(q <= 15u, InvalidInput, "awq code {} at [{}, {}] exceeds 4 bits", q, n, k);
        }
  return out;
}

std::vector<uint8_t> unpack_awq_qweight(std::span<const int32_t> qweight, int n_out, int n_in) {
  check_divisible(n_out, 8, "awq output dim");
  check_size(qweight.size(), n_in, n_out / 8, "awq qweight");
  const int words = n_out / 8;
  std::vector<uint8_t> codes(static_cast<std::size_t>(n_out) * n_in);
  for (int k = 0; k < n_in; ++k)
    for (int c = 0; c < words; ++c) {
      const uint32_t word = as_u32(qweight[static_cast<std::size_t>(k) * words + c]);
      for (int j = 0; j < 8; ++j)
        codes[static_cast<std::size_t>(8 * c + j) * n_in + k] =
            static_cast<uint8_t>((word >> (4 * kAwqInverseOrder[j])) & 0xfu);
    }
  return codes;
}

std::vector<int32_t> pack_awq_qzeros(std::span<const int32_t> zeros, int n_out, int n_groups) {
  check_size(zeros.size(), n_out, n_groups, "awq zeros");
  check_divisible(n_out, 8, "awq output dim");
  const int words = n_out / 8;
  std::vector<int32_t> out(static_cast<std::size_t>(n_groups) * words);
  for (int g = 0; g < n_groups; ++g)
    for (int c = 0; c < words; ++c) {
      uint32_t word = 0;
      for (int i = 0; i < 8; ++i) {
        const int n = 8 * c + kAwqOrder[i];
        const int32_t z = zeros[static_cast<std::size_t>(n) * n_groups + g];
        ANGELSLIM_CHECK(z >= 0 && z <= 15, InvalidInput, "awq zero {} at [out {}, group {}] outside [0, 15]", z, n, g);
        word |= static_cast<uint32_t>(z) << (4 * i);
      }
      out[static_cast<std::size_t>(g) * words + c] = as_i32(word);
    }
  return out;
}

std::vector<int32_t> unpack_awq_qzeros(std::span<const int32_t> qzeros, int n_out, int n_groups) {
  check_divisible(n_out, 8, "awq output dim");
  check_size(qzeros.size(), n_groups, n_out / 8, "awq qzeros");
  const int words = n_out / 8;
  std::vector<int32_t> zeros(static_cast<std::size_t>(n_out) * n_groups);
  for (int g = 0; g < n_groups; ++g)
    for (int c = 0; c < words; ++c) {
      const uint32_t word = as_u32(qzeros[static_cast<std::size_t>(g) * words + c]);
      for (int j = 0; j < 8; ++j)
        zeros[static_cast<std::size_t>(8 * c + j) * n_groups + g] =
            static_cast<int32_t>((word >> (4 * kAwqInverseOrder[j])) & 0xfu);
    }
  return zeros;
}

std::vector<float> transpose_scales(std::span<const float> scales, int n_out, int n_groups) {
  check_size(scales.size(), n_out, n_groups, "scales");
  std::vector<float> out(scales.size());
  for (int n = 0; n < n_out; ++n)
    for (int g = 0; g < n_groups; ++g)
      out[static_cast<std::size_t>(g) * n_out + n] = scales[static_cast<std::size_t>(n) * n_groups + g];
  return out;
}

}  // namespace angelslim
