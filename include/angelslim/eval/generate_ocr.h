// Greedy generation for HunyuanOCR prompts: one user turn [image?, text] rendered with the checkpoint's chat
// template and the generation prompt, the image run through the vision tower, the prefill with XD-RoPE.
#pragma once
#include <cstdint>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

namespace angelslim {

// The `generate --image FILE` command (image may be empty: a text-only OCR prompt). Streams the continuation to
// `out`; returns the generated ids (stops at an EOS id or after max_new tokens).
std::vector<int32_t> generate_ocr(const std::filesystem::path& model_dir, const std::string& prompt,
                                  const std::filesystem::path& image, int64_t max_new, std::ostream* out);

}  // namespace angelslim
