// Multimodal (HunyuanOCR) calibration dataset, SPEC 1.7.3; see include/angelslim/data/multimodal_dataset.h.
#include "angelslim/data/multimodal_dataset.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "angelslim/core/error.h"
#include "angelslim/data/text_dataset.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan_vl.h"

namespace angelslim {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

constexpr std::size_t kMaxWarnings = 20;

// Tokens of one image in the sequence (SPEC 3.8.3).
int64_t n_image_tokens_of(const ImagePatches& im, int64_t m) { return (im.grid_h / m) * (im.grid_w / m + 1) + 2; }

std::string str_field(const ojson& rec, const char* key, const std::string& where) {
  auto it = rec.find(key);
  if (it == rec.end() || it->is_null()) return {};
  if (!it->is_string()) throw InvalidInput(fmt::format("{}: field '{}' must be a string", where, key));
  return it->get<std::string>();
}

fs::path resolve_image(const fs::path& dir, const std::string& p) {
  const fs::path path(p);
  if (path.is_absolute()) return path;
  const fs::path a = dir / path;
  if (fs::exists(a)) return a;
  const fs::path b = dir / "images" / path;
  if (fs::exists(b)) return b;
  return a;
}

// A record turned into template messages (images as {"type": "image"} items) and the image paths in order.
struct Conversation {
  ojson messages = ojson::array();
  std::vector<fs::path> images;
  bool has_assistant = false;
};

Conversation prepare(const ojson& rec, const fs::path& dir, const std::string& where) {
  Conversation c;
  if (!rec.is_object()) throw InvalidInput(fmt::format("{}: expected a JSON object", where));
  if (rec.contains("messages")) {
    const auto& msgs = rec["messages"];
    if (!msgs.is_array()) throw InvalidInput(fmt::format("{}: 'messages' must be a list", where));
    const std::string sys = str_field(rec, "system_prompt", where);
    if (!sys.empty() && (msgs.empty() || msgs[0].value("role", "") != "system"))
      c.messages.push_back({{"role", "system"}, {"content", sys}});
    for (const auto& m : msgs) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        throw InvalidInput(fmt::format("{}: every message needs a string 'role'", where));
      ojson out = {{"role", m["role"]}};
      const auto& content = m.contains("content") ? m["content"] : ojson();
      if (content.is_array()) {
        ojson items = ojson::array();
        for (const auto& item : content) {
          const std::string type = item.is_object() ? item.value("type", "") : "";
          if (type == "image" || type == "image_url") {
            std::string p;
            if (item.contains("image") && item["image"].is_string())
              p = item["image"].get<std::string>();
            else if (item.contains("image_url") && item["image_url"].is_string())
              p = item["image_url"].get<std::string>();
            else if (item.contains("image_url") && item["image_url"].is_object())
              p = item["image_url"].value("url", "");
            if (p.rfind("file://", 0) == 0) p = p.substr(7);
            if (p.empty()) throw InvalidInput(fmt::format("{}: an image item needs a local path in 'image'", where));
            c.images.push_back(resolve_image(dir, p));
            items.push_back({{"type", "image"}});
          } else if (type == "text") {
            items.push_back({{"type", "text"}, {"text", item.value("text", "")}});
          } else {
            throw InvalidInput(
                fmt::format("{}: content item of type '{}' is not supported (image, text)", where, type));
          }
        }
        out["content"] = items;
      } else if (content.is_string() || content.is_null()) {
        out["content"] = content.is_null() ? "" : content.get<std::string>();
      } else {
        throw InvalidInput(fmt::format("{}: message content must be a string or a list of items", where));
      }
      c.has_assistant = c.has_assistant || out["role"] == "assistant";
      c.messages.push_back(std::move(out));
    }
    return c;
  }
  if (!rec.contains("question"))
    throw InvalidInput(fmt::format("{}: expected {{question, answer, img_path?}} or {{messages: [...]}}", where));
  const std::string q = str_field(rec, "question", where), a = str_field(rec, "answer", where);
  const std::string img = str_field(rec, "img_path", where), sys = str_field(rec, "system_prompt", where);
  if (!sys.empty()) c.messages.push_back({{"role", "system"}, {"content", sys}});
  ojson user = ojson::array();
  if (!img.empty()) {
    c.images.push_back(resolve_image(dir, img));
    user.push_back({{"type", "image"}});
  }
  user.push_back({{"type", "text"}, {"text", q}});
  c.messages.push_back({{"role", "user"}, {"content", user}});
  c.messages.push_back({{"role", "assistant"}, {"content", a}});
  c.has_assistant = true;
  return c;
}

// Renders, tokenizes and lays out one conversation. Returns false (with `why`) when an image fails to load.
bool build_sample(const Conversation& conv, bool add_generation_prompt, const Tokenizer& tok, const ChatTemplate& tmpl,
                  const ModelConfig& cfg, const ImageProcessorConfig& proc, const std::string& where,
                  MultiModalSample& out, std::string& why) {
  std::vector<std::array<int64_t, 2>> grids;
  for (const auto& p : conv.images) {
    try {
      out.images.push_back(preprocess_image(load_image(p), proc));
    } catch (const Error& e) {
      why = e.what();
      return false;
    }
    grids.push_back({out.images.back().grid_h, out.images.back().grid_w});
  }
  std::string text;
  try {
    text = tmpl.render(conv.messages, add_generation_prompt);
  } catch (const Error& e) {
    throw InvalidInput(fmt::format("{}: rendering the chat template failed: {}", where, e.what()));
  }
  const auto ids = tok.encode(text);
  const auto n_ph = std::count(ids.begin(), ids.end(), static_cast<int32_t>(cfg.image_token_id));
  if (n_ph != static_cast<int64_t>(grids.size()))
    throw InvalidInput(fmt::format("{}: the chat template emitted {} image placeholder(s) (id {}) for {} image(s)",
                                   where, n_ph, cfg.image_token_id, grids.size()));
  auto seq = layout_ocr_sequence(cfg, ids, grids, proc.merge_size);
  out.ids = std::move(seq.ids);
  out.xd_pos = std::move(seq.xd_pos);
  out.image_begin = std::move(seq.image_begin);
  return true;
}

}  // namespace

nlohmann::json MultiModalStats::to_json() const {
  return {{"lines_total", lines_total},
          {"records_read", records_read},
          {"records_visited", records_visited},
          {"samples_kept", samples_kept},
          {"with_image", with_image},
          {"text_only", text_only},
          {"skipped",
           {{"no_assistant", skipped_no_assistant},
            {"too_short", skipped_too_short},
            {"image_error", skipped_image_error},
            {"image_span_truncated", skipped_image_span_truncated}}},
          {"truncated", truncated},
          {"tokens_total", tokens_total},
          {"image_tokens_total", image_tokens_total},
          {"tokens_per_sample",
           {{"min", min_len},
            {"max", max_len},
            {"mean", samples_kept ? double(tokens_total) / double(samples_kept) : 0.0}}},
          {"warnings", warnings}};
}

std::vector<MultiModalSample> load_multimodal_dataset(const fs::path& path, const Tokenizer& tok,
                                                      const ChatTemplate& tmpl, const ModelConfig& cfg,
                                                      const ImageProcessorConfig& proc, int64_t max_seq_length,
                                                      int64_t num_samples, bool shuffle, uint64_t seed,
                                                      MultiModalStats* stats_out) {
  const std::string file = path.string();
  ANGELSLIM_CHECK(max_seq_length >= 2, InvalidInput, "{}: max_seq_length must be >= 2, got {}", file, max_seq_length);
  ANGELSLIM_CHECK(cfg.family == ModelFamily::kOcr, InvalidInput,
                  "{}: MultiModalDataset needs a HunyuanOCR (hunyuan_vl) model", file);
  const std::string data = read_file(path);
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  MultiModalStats st;
  const auto records = parse_jsonl(data, file, &st.lines_total, &st.blank_lines);
  st.records_read = static_cast<int64_t>(records.size());
  const auto order = record_order(records.size(), shuffle, seed);

  auto warn = [&](int64_t line, const std::string& msg) {
    const auto w = fmt::format("{}:{}: {}", file, line, msg);
    if (st.warnings.size() < kMaxWarnings) st.warnings.push_back(w);
    spdlog::warn("{}", w);
  };
  std::vector<MultiModalSample> out;
  for (std::size_t oi : order) {
    if (num_samples > 0 && static_cast<int64_t>(out.size()) >= num_samples) break;
    const JsonlRecord& r = records[oi];
    ++st.records_visited;
    const std::string where = fmt::format("{}:{}", file, r.line);
    const Conversation conv = prepare(r.value, dir, where);
    if (!conv.has_assistant) {
      ++st.skipped_no_assistant;
      continue;
    }
    MultiModalSample s;
    s.source_line = r.line;
    std::string why;
    if (!build_sample(conv, false, tok, tmpl, cfg, proc, where, s, why)) {
      ++st.skipped_image_error;
      warn(r.line, "image skipped: " + why);
      continue;
    }
    const int64_t n = static_cast<int64_t>(s.ids.size());
    if (n > max_seq_length) {
      // Keep the sample only if every image span (through its image_end token) fits.
      bool fits = true;
      for (std::size_t k = 0; k < s.images.size(); ++k) {
        const int64_t span_end =
            s.image_begin[k] + n_image_tokens_of(s.images[k], proc.merge_size) + 1;  // + the image_end token
        fits = fits && span_end <= max_seq_length;
      }
      if (!fits) {
        ++st.skipped_image_span_truncated;
        warn(r.line, fmt::format("skipped: an image span crosses max_seq_length {} ({} tokens)", max_seq_length, n));
        continue;
      }
      s.ids.resize(static_cast<std::size_t>(max_seq_length));
      s.xd_pos.resize(static_cast<std::size_t>(max_seq_length * 4));
      s.truncated = true;
      ++st.truncated;
    }
    if (s.ids.size() < 2) {
      ++st.skipped_too_short;
      continue;
    }
    const int64_t len = static_cast<int64_t>(s.ids.size());
    st.tokens_total += len;
    for (const auto& im : s.images) st.image_tokens_total += n_image_tokens_of(im, proc.merge_size);
    st.min_len = out.empty() ? len : std::min(st.min_len, len);
    st.max_len = std::max(st.max_len, len);
    (s.images.empty() ? st.text_only : st.with_image) += 1;
    out.push_back(std::move(s));
  }
  st.samples_kept = static_cast<int64_t>(out.size());
  if (stats_out) *stats_out = st;
  return out;
}

MultiModalSample make_ocr_prompt(const std::string& text, const fs::path& image, const Tokenizer& tok,
                                 const ChatTemplate& tmpl, const ModelConfig& cfg, const ImageProcessorConfig& proc) {
  Conversation conv;
  ojson user = ojson::array();
  if (!image.empty()) {
    conv.images.push_back(image);
    user.push_back({{"type", "image"}});
  }
  user.push_back({{"type", "text"}, {"text", text}});
  conv.messages.push_back({{"role", "user"}, {"content", user}});
  MultiModalSample s;
  std::string why;
  if (!build_sample(conv, true, tok, tmpl, cfg, proc, "prompt", s, why)) throw InvalidInput(why);
  return s;
}

}  // namespace angelslim
