// HF tokenizer.json byte-level BPE (SPEC 1.6.1): added tokens, normalizer, Split/ByteLevel
// pre-tokenizers and rank-ordered merges, as HF `tokenizers` encodes with no post-processor.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "angelslim/text/tokenizer.h"

namespace angelslim {

class BpeTokenizer final : public Tokenizer {
 public:
  // Reads and parses a tokenizer.json; throws IoError / FormatError naming the path.
  static std::unique_ptr<BpeTokenizer> from_file(const std::filesystem::path& path);
  // Parses tokenizer.json text; `origin` names the source in error messages. BOS defaults to
  // <｜hy_begin▁of▁sentence｜> when that added token exists; no EOS ids until set_eos_ids.
  static std::unique_ptr<BpeTokenizer> from_json(std::string_view json_text, const std::string& origin);
  ~BpeTokenizer() override;

  // Throws InvalidInput when `text` is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text) const override;
  // Throws InvalidInput for an id outside [0, vocab_size()); ids with no token decode to nothing.
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override;
  std::optional<int32_t> special_id(std::string_view content) const override;
  // Throws InvalidInput when no BOS is known (neither the default token nor set_bos_id).
  int32_t bos_id() const override;
  std::vector<int32_t> eos_ids() const override;

  // The pieces (raw bytes) BPE sees for `text` taken as plain text (no added-token matching):
  // after the normalizer, the Splits and ByteLevel's prefix space / regex.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  void set_bos_id(int32_t id);
  void set_eos_ids(std::vector<int32_t> ids);

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace angelslim
