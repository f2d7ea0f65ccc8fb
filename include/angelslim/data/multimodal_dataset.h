// Multimodal calibration dataset for HunyuanOCR (SPEC 1.7.3): jsonl records {question, answer, img_path?,
// system_prompt?} or {messages: [...]} with OpenAI-style content items, rendered with the checkpoint's chat
// template, tokenized, image placeholders expanded to the adapter's token count, XD-RoPE positions attached.
// Text-only records (no image) are allowed in the same file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "angelslim/data/image.h"
#include "angelslim/model/model_config.h"
#include "angelslim/text/chat_template.h"
#include "angelslim/text/tokenizer.h"

namespace angelslim {

struct MultiModalSample {
  std::vector<int32_t> ids;          // image placeholders expanded; 2 <= size <= max_seq_length
  std::vector<int32_t> xd_pos;       // [ids.size(), 4] (p, w, h, t)
  std::vector<ImagePatches> images;  // in prompt order
  std::vector<int64_t> image_begin;  // per image: index of its first image token in ids
  int64_t source_line = 0;           // 1-based line in the data file
  bool truncated = false;            // right-truncated to max_seq_length (after its last image span)
};

struct MultiModalStats {
  int64_t lines_total = 0, blank_lines = 0, records_read = 0, records_visited = 0, samples_kept = 0;
  int64_t with_image = 0, text_only = 0;
  int64_t skipped_image_error = 0;           // image missing or not decodable (warning)
  int64_t skipped_image_span_truncated = 0;  // an image span would cross max_seq_length
  int64_t skipped_too_short = 0, skipped_no_assistant = 0;
  int64_t truncated = 0, tokens_total = 0, image_tokens_total = 0, min_len = 0, max_len = 0;
  std::vector<std::string> warnings;  // first few, "<file>:<line>: ..."
  nlohmann::json to_json() const;
};

// Reads `path` (jsonl), optionally shuffles the records (the TextDataset order: std::mt19937_64(seed) +
// Fisher-Yates with rejection), and keeps samples in that order until `num_samples` are kept (<= 0: all).
// Image paths resolve against the jsonl's directory, then <dir>/images/ (AngelSlim's layout); absolute paths as is.
// Throws InvalidInput ("<file>:<line>: ...") for a line that is not JSON, a record of no known shape, a template
// that does not emit exactly one image placeholder per image.
std::vector<MultiModalSample> load_multimodal_dataset(const std::filesystem::path& path, const Tokenizer& tokenizer,
                                                      const ChatTemplate& chat_template, const ModelConfig& cfg,
                                                      const ImageProcessorConfig& processor, int64_t max_seq_length,
                                                      int64_t num_samples, bool shuffle, uint64_t seed,
                                                      MultiModalStats* stats = nullptr);

// One OCR prompt for generation: [system?] + user [image?, text], rendered with add_generation_prompt and the
// image placeholder expanded. `image` may be empty (text only).
MultiModalSample make_ocr_prompt(const std::string& text, const std::filesystem::path& image,
                                 const Tokenizer& tokenizer, const ChatTemplate& chat_template, const ModelConfig& cfg,
                                 const ImageProcessorConfig& processor);

}  // namespace angelslim
