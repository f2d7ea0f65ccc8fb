// Integer weight packing: GPTQ v1 (SPEC 5.3.2) and AWQ GEMM (SPEC 5.4), with the matching unpacking.
// Inputs use the quantizer's layout: codes [N=out, K=in] (code of W[n, k]); zeros and scales [N, K/g].
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace angelslim {

// GPTQ v1 qweight: returns [K/P, N] i32 (P = 32/bits, bits 4 or 8): word [r, n] holds q[P*r + j, n] in
// bits [bits*j, bits*(j+1)), lowest bits = lowest k, where q[k, n] = codes[n, k].
// codes: [n_out, n_in] u8 row-major, each < 2^bits; n_in % P == 0.
std::vector<int32_t> pack_gptq_qweight(std::span<const uint8_t> codes, int n_out, int n_in, int bits);
// Inverse of pack_gptq_qweight. qweight: [n_in/P, n_out] i32; returns codes [n_out, n_in] u8.
std::vector<uint8_t> unpack_gptq_qweight(std::span<const int32_t> qweight, int n_out, int n_in, int bits);

// GPTQ v1 qzeros: returns [G, N/P] i32 storing zero - 1 (v1 convention), packed along the output dim:
// word [γ, c] holds Z[P*c + j, γ] - 1 in bits [bits*j, ...). zeros: [n_out, n_groups] i32, each in
// [1, 2^bits] (InvalidInput otherwise: an asymmetric zero of 0 cannot be stored, SPEC 5.3.4); n_out % P == 0.
std::vector<int32_t> pack_gptq_qzeros(std::span<const int32_t> zeros, int n_out, int n_groups, int bits);
// Inverse of pack_gptq_qzeros (adds the 1 back). qzeros: [n_groups, n_out/P]; returns zeros [n_out, n_groups].
std::vector<int32_t> unpack_gptq_qzeros(std::span<const int32_t> qzeros, int n_out, int n_groups, int bits);

// AWQ GEMM order: nibble i of a word holds output column 8c + kAwqOrder[i]; column 8c + j sits in nibble
// kAwqInverseOrder[j].
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
constexpr int kAwqInverseOrder[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// AWQ GEMM qweight (4-bit only): returns [K, N/8] i32, word [k, c] = Σ_i q[k, 8c + kAwqOrder[i]] << 4i.
// codes: [n_out, n_in] u8 row-major, each < 16; n_out % 8 == 0.
std::vector<int32_t> pack_awq_qweight(std::span<const uint8_t> codes, int n_out, int n_in);
// Inverse of pack_awq_qweight. qweight: [n_in, n_out/8] i32; returns codes [n_out, n_in] u8.
std::vector<uint8_t> unpack_awq_qweight(std::span<const int32_t> qweight, int n_out, int n_in);

// AWQ GEMM qzeros: returns [G, N/8] i32 with the same interleave of the raw zeros (no -1).
// zeros: [n_out, n_groups] i32, each in [0, 15]; n_out % 8 == 0.
std::vector<int32_t> pack_awq_qzeros(std::span<const int32_t> zeros, int n_out, int n_groups);
// Inverse of pack_awq_qzeros. qzeros: [n_groups, n_out/8]; returns zeros [n_out, n_groups].
std::vector<int32_t> unpack_awq_qzeros(std::span<const int32_t> qzeros, int n_out, int n_groups);

// Transposes scales from the quantizer's [n_out, n_groups] to the checkpoint's [n_groups, n_out] (both f32).
std::vector<float> transpose_scales(std::span<const float> scales, int n_out, int n_groups);

}  // namespace angelslim
