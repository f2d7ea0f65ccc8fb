// Tokenizer interface shared by the two Hunyuan tokenizer families (SPEC 1.6):
// tokenizer.json byte-level BPE (0.5B/1.8B/4B/OCR) and hy.tiktoken (7B/A13B).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace angelslim {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes text with special/added-token matching enabled and no post-processor tokens (no BOS added).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Concatenated bytes of the tokens (specials as their text). Invalid UTF-8 is kept as raw bytes.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  // Number of ids (regular + special); ids are in [0, vocab_size()).
  virtual int32_t vocab_size() const = 0;
  // Id of a special/added token by its content string, if it exists.
  virtual std::optional<int32_t> special_id(std::string_view content) const = 0;
  // Beginning-of-sequence id used for raw text samples (SPEC 1.7.2).
  virtual int32_t bos_id() const = 0;
  // End-of-sequence ids that stop generation (from tokenizer_config.json / generation_config.json).
  virtual std::vector<int32_t> eos_ids() const = 0;

  // Loads the tokenizer of a checkpoint directory: tokenizer.json if present, else hy.tiktoken.
  // Throws FormatError/InvalidInput naming the file on any problem.
  static std::unique_ptr<Tokenizer> load(const std::filesystem::path& model_dir);
};

}  // namespace angelslim
