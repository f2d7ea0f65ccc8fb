// Checkpoint folder of a resumable run; see include/angelslim/pipeline/resume.h and docs/reliability.md.
#include "angelslim/pipeline/resume.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <future>

#include "angelslim/core/error.h"
#include "angelslim/core/hash.h"

namespace angelslim {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kFormat = 1;
constexpr const char* kManifest = "manifest.json";

std::string acts_name(int64_t layers_done) { return fmt::format("acts-{:05d}.f32", layers_done); }

}  // namespace

std::string model_fingerprint(const fs::path& dir, const std::vector<std::string>& shard_files) {
  std::vector<std::string> names = shard_files;
  names.push_back("config.json");
  if (fs::exists(dir / "model.safetensors.index.json")) names.push_back("model.safetensors.index.json");
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::vector<std::future<std::string>> digests;
  for (const auto& n : names)
    digests.push_back(std::async(std::launch::async, [p = dir / n] { return sha256_file(p); }));
  Sha256 h;
  for (std::size_t i = 0; i < names.size(); ++i) {
    h.update(names[i]);
    h.update(std::string_view("\0", 1));
    h.update(digests[i].get());
  }
  return h.hex_digest();
}

std::string data_fingerprint(const std::vector<std::vector<int32_t>>& samples) {
  Sha256 h;
  for (const auto& s : samples) {
    const uint64_t n = s.size();
    h.update(&n, sizeof n);
    h.update(s.data(), s.size() * sizeof(int32_t));
  }
  return h.hex_digest();
}

fs::path Checkpoint::folder_for(const fs::path& final_dir) {
  fs::path f = final_dir.lexically_normal();
  if (f.filename().empty()) f = f.parent_path();
  const fs::path parent = f.has_parent_path() ? f.parent_path() : fs::path(".");
  return parent / (".ckpt-" + f.filename().string());
}

Checkpoint::Checkpoint(fs::path folder) : dir_(std::move(folder)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw IoError(fmt::format("{}: cannot create the checkpoint folder: {}", dir_.string(), ec.message()));
  const fs::path lock = dir_ / "lock";
  lock_fd_ = ::open(lock.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw IoError(fmt::format("{}: cannot create: {}", lock.string(), std::strerror(errno)));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (e == EWOULDBLOCK)
      throw IoError(fmt::format("{}: another angelslim run is writing the same output (its checkpoint is locked)",
                                dir_.string()));
    throw IoError(fmt::format("{}: cannot lock: {}", lock.string(), std::strerror(e)));
  }
}

Checkpoint::~Checkpoint() {
  if (!removed_) {
    std::error_code ec;
    if (!has_state()) {
      fs::remove_all(dir_, ec);
    } else if (saved_) {
      spdlog::info("resumable state kept in {}: the same command continues from there (--no-resume starts over)",
                   dir_.string());
    }
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

bool Checkpoint::has_state() const {
  std::error_code ec;
  return fs::exists(dir_ / kManifest, ec);
}

void Checkpoint::clear() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().filename() == "lock") continue;
    fs::remove_all(e.path(), ec);
  }
  saved_ = false;
}

std::optional<ResumeState> Checkpoint::load(const RunFingerprint& fp, std::string* why) {
  why->clear();
  if (!has_state()) return std::nullopt;
  json m;
  try {
    m = json::parse(read_file(dir_ / kManifest));
  } catch (const std::exception& e) {
    *why = fmt::format("its manifest is unreadable ({})", e.what());
    return std::nullopt;
  }
  try {
    if (m.value("format", 0) != kFormat || m.value("tool_version", std::string()) != ANGELSLIM_VERSION) {
      *why = fmt::format("it was written by another version ({})", m.value("tool_version", std::string("?")));
      return std::nullopt;
    }
    const json& f = m.at("fingerprint");
    if (f.at("config").get<std::string>() != fp.config) {
      *why = "the configuration changed (YAML settings, command-line overrides or --device)";
      return std::nullopt;
    }
    if (f.at("model").get<std::string>() != fp.model) {
      *why = "the input model changed (config.json or safetensors bytes)";
      return std::nullopt;
    }
    if (f.at("data").get<std::string>() != fp.data) {
      *why = "the calibration data changed (data file, tokenizer, chat template or sampling)";
      return std::nullopt;
    }
    ResumeState st;
    st.layers_done = m.at("layers_done").get<int64_t>();
    st.writer = m.at("writer");
    st.layers = m.at("layers");
    st.warnings = m.at("warnings");
    const json& a = m.at("activations");
    if (!a.is_null()) {
      const fs::path p = dir_ / a.at("file").get<std::string>();
      const uint64_t count = a.at("count").get<uint64_t>();
      std::error_code ec;
      const auto size = fs::file_size(p, ec);
      if (ec || size != count * sizeof(float)) {
        *why = fmt::format("{} is missing or has the wrong size", p.filename().string());
        return std::nullopt;
      }
      st.activations.resize(count);
      std::FILE* in = std::fopen(p.c_str(), "rb");
      const bool ok = in && std::fread(st.activations.data(), sizeof(float), count, in) == count;
      if (in) std::fclose(in);
      if (!ok || sha256_hex(std::string_view(reinterpret_cast<const char*>(st.activations.data()),
                                             count * sizeof(float))) != a.at("sha256").get<std::string>()) {
        *why = fmt::format("{} is unreadable or damaged", p.filename().string());
        return std::nullopt;
      }
    }
    // Activation files of a save that did not reach its manifest.
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_, ec)) {
      const std::string n = e.path().filename().string();
      const bool current = !a.is_null() && n == a.at("file").get<std::string>();
      if ((n.rfind("acts-", 0) == 0 || n.rfind(".tmp-", 0) == 0) && !current) fs::remove(e.path(), ec);
    }
    return st;
  } catch (const json::exception& e) {
    *why = fmt::format("its manifest is malformed ({})", e.what());
    return std::nullopt;
  }
}

void Checkpoint::save(const RunFingerprint& fp, int64_t layers_done, SafetensorsWriter& writer, const json& layers,
                      const json& warnings, std::span<const float> activations) {
  writer.sync();
  json acts = nullptr;
  const std::string name = acts_name(layers_done);
  if (!activations.empty()) {
    const fs::path tmp = dir_ / (".tmp-" + name), dst = dir_ / name;
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw IoError(fmt::format("{}: cannot create: {}", tmp.string(), std::strerror(errno)));
    const auto* bytes = reinterpret_cast<const uint8_t*>(activations.data());
    const std::size_t total = activations.size() * sizeof(float);
    Sha256 h;
    bool ok = true;
    constexpr std::size_t kChunk = 64u << 20;
    for (std::size_t off = 0; ok && off < total; off += kChunk) {
      const std::size_t n = std::min(kChunk, total - off);
      ok = write_checked(bytes + off, n, f) == n;
      h.update(bytes + off, n);
    }
    ok = ok && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
    const int e = errno;
    const bool closed = std::fclose(f) == 0;
    if (!ok || !closed) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw IoError(fmt::format("{}: write failed: {}", dst.string(), std::strerror(ok ? errno : e)));
    }
    std::error_code ec;
    fs::rename(tmp, dst, ec);
    if (ec) throw IoError(fmt::format("{}: rename failed: {}", dst.string(), ec.message()));
    acts = {{"file", name}, {"count", activations.size()}, {"sha256", h.hex_digest()}};
  }
  const json m = {{"format", kFormat},           {"tool_version", ANGELSLIM_VERSION},
                  {"fingerprint", fp.to_json()}, {"layers_done", layers_done},
                  {"writer", writer.state()},    {"layers", layers},
                  {"warnings", warnings},        {"activations", acts}};
  write_file_atomic(dir_ / kManifest, m.dump() + "\n");
  fsync_dir(dir_);
  saved_ = true;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("acts-", 0) == 0 && n != name) fs::remove(e.path(), ec);
  }
}

void Checkpoint::remove() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
  if (ec) spdlog::warn("{}: cannot remove the checkpoint folder: {}", dir_.string(), ec.message());
  removed_ = true;
}

}  // namespace angelslim
