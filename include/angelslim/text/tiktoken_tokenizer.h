// hy.tiktoken BPE of Hunyuan 7B / A13B (SPEC 1.6.2): base64 ranks file, 210 fixed specials, NFC,
// the A13B pre-tokenizer regex and byte-level merging by rank, as tiktoken's CoreBPE encodes.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "angelslim/text/tokenizer.h"

namespace angelslim {

class TiktokenTokenizer final : public Tokenizer {
 public:
  // The A13B pre-tokenizer regex (tokenization_hy.py PAT_STR).
  static constexpr std::string_view kPattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  // Number of specials after the ranks: endoftext, startoftext, bos, eos, pad, extra_0 .. extra_204.
  static constexpr int32_t kNumSpecials = 210;

  // Reads and parses hy.tiktoken; throws IoError / FormatError naming the path.
  static std::unique_ptr<TiktokenTokenizer> from_file(const std::filesystem::path& path);
  // Parses the file content: one "<base64 bytes> <rank>" line per token, rank == 0-based line index,
  // byte strings unique, every single byte present. Specials get ids n_ranks, n_ranks + 1, ...
  // BOS defaults to <|startoftext|>; no EOS ids until set_eos_ids.
  static std::unique_ptr<TiktokenTokenizer> from_text(std::string_view content, const std::string& origin);
  ~TiktokenTokenizer() override;

  // NFC-normalizes `text` first; throws InvalidInput when it is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text) const override;
  // Throws InvalidInput for an id outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override;
  std::optional<int32_t> special_id(std::string_view content) const override;
  int32_t bos_id() const override;
  std::vector<int32_t> eos_ids() const override;

  void set_bos_id(int32_t id);
  void set_eos_ids(std::vector<int32_t> ids);

 private:
  struct Impl;
  explicit TiktokenTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace angelslim
