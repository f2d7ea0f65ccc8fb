// safetensors reader (mmap + header validation) and sharded writer. Format: SPEC 1.2.
#include "angelslim/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "angelslim/core/error.h"

namespace angelslim {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string errno_text() { return std::strerror(errno); }
}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<float> TensorView::to_f32() const {
  std::vector<float> out(static_cast<std::size_t>(numel()));
  convert_to_f32(dtype, data, out.data(), out.size());
  return out;
}

std::string read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw IoError(fmt::format("{}: cannot open: {}", path.string(), errno_text()));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw IoError(fmt::format("{}: read failed", path.string()));
  return ss.str();
}

// ---------------------------------------------------------------- reader

SafetensorsContent parse_safetensors(std::span<const uint8_t> bytes, const std::string& p) {
  const std::size_t size = bytes.size();
  if (size < 8) throw FormatError(fmt::format("{}: not a safetensors file: {} bytes, need at least 8", p, size));
  SafetensorsContent out;
  const uint8_t* base = bytes.data();
  uint64_t n = 0;
  std::memcpy(&n, base, 8);  // little-endian host (x86-64, aarch64)
  if (n > kMaxHeaderBytes)
    throw FormatError(fmt::format("{}: header length {} exceeds the limit of {} bytes", p, n, kMaxHeaderBytes));
  if (n > size - 8)
    throw FormatError(fmt::format("{}: truncated: header length {} but the file has {} bytes", p, n, size));
  json h;
  try {
    h = json::parse(base + 8, base + 8 + n);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: header is not valid JSON: {}", p, e.what()));
  }
  if (!h.is_object()) throw FormatError(fmt::format("{}: header is not a JSON object", p));
  const uint64_t data_size = size - 8 - n;
  const uint8_t* data = base + 8 + n;
  std::vector<std::pair<uint64_t, uint64_t>> regions;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& key = it.key();
    if (key == "__metadata__") {
      if (!it->is_object()) throw FormatError(fmt::format("{}: __metadata__ is not an object", p));
      for (auto m = it->begin(); m != it->end(); ++m)
        if (m->is_string()) out.metadata[m.key()] = m->get<std::string>();
      continue;
    }
    const json& t = *it;
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") || !t.contains("data_offsets") ||
        !t["dtype"].is_string() || !t["shape"].is_array() || !t["data_offsets"].is_array() ||
        t["data_offsets"].size() != 2)
      throw FormatError(fmt::format("{}: tensor '{}': expected {{dtype, shape, data_offsets[2]}}", p, key));
    TensorView v;
    v.name = key;
    v.file = p;
    const auto ds = t["dtype"].get<std::string>();
    if (!parse_dtype(ds, &v.dtype)) throw FormatError(fmt::format("{}: tensor '{}': unknown dtype '{}'", p, key, ds));
    uint64_t numel = 1;
    for (const auto& d : t["shape"]) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        throw FormatError(fmt::format("{}: tensor '{}': shape entries must be non-negative integers", p, key));
      const auto dv = d.get<uint64_t>();
      if (dv != 0 && numel > (1ull << 50) / dv)
        throw FormatError(fmt::format("{}: tensor '{}': shape too large", p, key));
      numel *= dv;
      v.shape.push_back(static_cast<int64_t>(dv));
    }
    const auto& off = t["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw FormatError(fmt::format("{}: tensor '{}': data_offsets must be non-negative integers", p, key));
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data_size)
      throw FormatError(fmt::format("{}: tensor '{}': data_offsets [{}, {}) outside the data area of {} bytes", p,
                                    key, b, e, data_size));
    const uint64_t want = numel * dtype_size(v.dtype);
    if (e - b != want)
      throw FormatError(fmt::format("{}: tensor '{}': {} bytes for {} {} elements, expected {}", p, key, e - b,
                                    numel, ds, want));
    v.data = data + b;
    v.nbytes = static_cast<std::size_t>(want);
    regions.emplace_back(b, e);
    out.tensors.emplace(key, std::move(v));
  }
  std::sort(regions.begin(), regions.end());
  uint64_t cursor = 0;
  for (const auto& [b, e] : regions) {
    if (b < cursor) throw FormatError(fmt::format("{}: tensor data regions overlap at byte {}", p, b));
    if (b > cursor) throw FormatError(fmt::format("{}: gap in the data area at bytes [{}, {})", p, cursor, b));
    cursor = e;
  }
  if (cursor != data_size)
    throw FormatError(fmt::format("{}: data area has {} bytes but tensors cover {} (truncated or trailing bytes)", p,
                                  data_size, cursor));
  return out;
}

std::map<std::string, std::string> parse_safetensors_index(std::string_view text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: not valid JSON: {}", origin, e.what()));
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw FormatError(fmt::format("{}: missing object 'weight_map'", origin));
  std::map<std::string, std::string> wanted;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it->is_string())
      throw FormatError(fmt::format("{}: weight_map['{}'] is not a file name", origin, it.key()));
    const auto f = it->get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == ".." || f == ".")
      throw FormatError(fmt::format("{}: weight_map['{}'] = '{}' is not a plain file name", origin, it.key(), f));
    wanted[it.key()] = f;
  }
  return wanted;
}

SafetensorsFile::SafetensorsFile(const fs::path& path) : path_(path) {
  const std::string p = path.string();
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(fmt::format("{}: cannot open: {}", p, errno_text()));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw IoError(fmt::format("{}: cannot stat: {}", p, errno_text()));
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    throw FormatError(fmt::format("{}: not a safetensors file: {} bytes, need at least 8", p, size_));
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw IoError(fmt::format("{}: mmap failed: {}", p, errno_text()));
  }
  try {
    auto content = parse_safetensors(std::span<const uint8_t>(static_cast<const uint8_t*>(map_), size_), p);
    tensors_ = std::move(content.tensors);
    metadata_ = std::move(content.metadata);
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

TensorStore::TensorStore(const fs::path& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) throw InvalidInput(fmt::format("{}: not a directory", dir.string()));
  const fs::path index = dir / "model.safetensors.index.json";
  const fs::path single = dir / "model.safetensors";
  if (fs::exists(index)) {
    const auto wanted = parse_safetensors_index(read_file(index), index.string());
    std::map<std::string, std::size_t> file_idx;
    for (const auto& [name, f] : wanted) {
      if (file_idx.count(f)) continue;
      const fs::path fp = dir / f;
      if (!fs::exists(fp))
        throw FormatError(fmt::format("{}: shard '{}' listed in the index is missing", index.string(), f));
      file_idx[f] = files_.size();
      files_.push_back(std::make_unique<SafetensorsFile>(fp));
    }
    for (const auto& [name, f] : wanted) {
      const auto& ts = files_[file_idx[f]]->tensors();
      auto it = ts.find(name);
      if (it == ts.end())
        throw FormatError(fmt::format("{}: tensor '{}' is listed for shard '{}' but that shard does not hold it",
                                      index.string(), name, f));
      index_[name] = &it->second;
    }
  } else if (fs::exists(single)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& [name, v] : files_.back()->tensors()) index_[name] = &v;
  } else {
    throw InvalidInput(fmt::format("{}: no model.safetensors or model.safetensors.index.json", dir.string()));
  }
}

const TensorView& TensorStore::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw FormatError(fmt::format("{}: tensor '{}' not found in the checkpoint", dir_.string(), name));
  return *it->second;
}

std::vector<std::string> TensorStore::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f->path().filename().string());
  return out;
}

// ---------------------------------------------------------------- writer

namespace {

// ANGELSLIM_FAULT_WRITE=N: the N-th write_checked call fails (0: never). Read once.
uint64_t fault_write_index() {
  static const uint64_t n = [] {
    const char* env = std::getenv("ANGELSLIM_FAULT_WRITE");
    if (!env || !*env) return uint64_t{0};
    char* end = nullptr;
    const unsigned long long v = std::strtoull(env, &end, 10);
    return end && *end == '\0' ? static_cast<uint64_t>(v) : uint64_t{0};
  }();
  return n;
}

std::atomic<uint64_t> g_write_calls{0};

// fflush + fsync of an open stream; false (errno set) on failure.
bool sync_stream(std::FILE* f) { return std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0; }

}  // namespace

std::size_t write_checked(const void* data, std::size_t n, std::FILE* f) {
  if (const uint64_t k = fault_write_index(); k != 0 && g_write_calls.fetch_add(1) + 1 == k) {
    errno = ENOSPC;
    return 0;
  }
  return n == 0 ? 0 : std::fwrite(data, 1, n, f);
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw IoError(fmt::format("{}: cannot open directory: {}", dir.string(), errno_text()));
  const bool ok = ::fsync(fd) == 0;
  const std::string why = ok ? std::string() : errno_text();
  ::close(fd);
  if (!ok) throw IoError(fmt::format("{}: fsync failed: {}", dir.string(), why));
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  const fs::path tmp = path.parent_path() / (".tmp-" + path.filename().string());
  {
    std::FILE* f = std::fopen(tmp.string().c_str(), "wb");
    if (!f) throw IoError(fmt::format("{}: cannot create: {}", tmp.string(), errno_text()));
    bool ok = content.empty() || write_checked(content.data(), content.size(), f) == content.size();
    ok = ok && sync_stream(f);
    const std::string why = ok ? std::string() : errno_text();
    const bool closed = std::fclose(f) == 0;
    if (!ok || !closed) {
      const std::string reason = ok ? errno_text() : why;
      std::error_code ec;
      fs::remove(tmp, ec);
      throw IoError(fmt::format("{}: write failed: {}", path.string(), reason));
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ec2;
    fs::remove(tmp, ec2);
    throw IoError(fmt::format("{}: rename failed: {}", path.string(), ec.message()));
  }
}

SafetensorsWriter::SafetensorsWriter(fs::path dir, uint64_t max_shard_bytes)
    : dir_(std::move(dir)), max_shard_bytes_(max_shard_bytes) {}

SafetensorsWriter::~SafetensorsWriter() {
  for (auto& s : shards_) {
    if (s.fp) std::fclose(s.fp);
    if (!data_dir_.empty() && !finished_) continue;  // the checkpoint's data
    std::error_code ec;
    fs::remove(s.tmp_data, ec);
  }
}

void SafetensorsWriter::set_data_dir(fs::path data_dir) {
  ANGELSLIM_ASSERT(shards_.empty() && !finished_);
  data_dir_ = std::move(data_dir);
}

void SafetensorsWriter::open_shard() {
  Shard s;
  s.tmp_data = data_dir_.empty() ? dir_ / fmt::format(".tmp-shard-{}.data", shards_.size())
                                 : data_dir_ / fmt::format("shard-{}.data", shards_.size());
  s.fp = std::fopen(s.tmp_data.string().c_str(), "wb");
  if (!s.fp) throw IoError(fmt::format("{}: cannot create: {}", s.tmp_data.string(), errno_text()));
  if (data_dir_.empty() && header_reserve_ > 0) {
    s.data_start = header_reserve_;  // a hole until finish() writes the header
    if (::fseeko(s.fp, static_cast<off_t>(s.data_start), SEEK_SET) != 0) {
      const std::string why = errno_text();
      std::fclose(s.fp);
      throw IoError(fmt::format("{}: cannot seek: {}", s.tmp_data.string(), why));
    }
  }
  shards_.push_back(std::move(s));
}

void SafetensorsWriter::reserve_header(uint64_t bytes) {
  ANGELSLIM_ASSERT(shards_.empty() && !finished_);
  header_reserve_ = (bytes + 7) / 8 * 8;
}

void SafetensorsWriter::start_writeback() {
  for (auto& s : shards_) {
    if (!s.fp) continue;
    if (std::fflush(s.fp) != 0) throw IoError(fmt::format("{}: write failed: {}", s.tmp_data.string(), errno_text()));
#ifdef __linux__
    (void)::sync_file_range(::fileno(s.fp), 0, 0, SYNC_FILE_RANGE_WRITE);  // advisory: finish() still fsyncs
#endif
  }
}

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            std::span<const uint8_t> bytes) {
  ANGELSLIM_ASSERT(!finished_);
  int64_t numel = 1;
  for (auto d : shape) numel *= d;
  ANGELSLIM_ASSERT(static_cast<uint64_t>(numel) * dtype_size(dtype) == bytes.size());
  ANGELSLIM_ASSERT(names_.count(name) == 0);
  if (shards_.empty() || (shards_.back().bytes > 0 && shards_.back().bytes + bytes.size() > max_shard_bytes_))
    open_shard();
  Shard& s = shards_.back();
  if (!bytes.empty() && write_checked(bytes.data(), bytes.size(), s.fp) != bytes.size())
    throw IoError(fmt::format("{}: write failed: {}", s.tmp_data.string(), errno_text()));
  names_.insert(name);
  s.entries.push_back(Entry{name, dtype, std::move(shape), s.bytes, bytes.size()});
  s.bytes += bytes.size();
  total_bytes_ += bytes.size();
}

void SafetensorsWriter::add_f32(const std::string& name, std::vector<int64_t> shape, std::span<const float> values) {
  add(name, DType::kF32, std::move(shape),
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(values.data()), values.size() * 4));
}

void SafetensorsWriter::sync() {
  for (auto& s : shards_)
    if (s.fp && !sync_stream(s.fp))
      throw IoError(fmt::format("{}: write failed: {}", s.tmp_data.string(), errno_text()));
}

json SafetensorsWriter::state() const {
  json shards = json::array();
  for (const auto& s : shards_) {
    json entries = json::array();
    for (const auto& e : s.entries)
      entries.push_back({e.name, std::string(dtype_name(e.dtype)), e.shape, e.offset, e.nbytes});
    shards.push_back({{"data", s.tmp_data.filename().string()}, {"bytes", s.bytes}, {"entries", std::move(entries)}});
  }
  return {{"shards", std::move(shards)}, {"total_bytes", total_bytes_}};
}

void SafetensorsWriter::restore(const json& st) {
  ANGELSLIM_ASSERT(shards_.empty() && !finished_ && !data_dir_.empty());
  const std::string where = data_dir_.string();
  try {
    for (const auto& js : st.at("shards")) {
      Shard s;
      s.tmp_data = data_dir_ / js.at("data").get<std::string>();
      s.bytes = js.at("bytes").get<uint64_t>();
      uint64_t end = 0;
      for (const auto& je : js.at("entries")) {
        DType dt;
        if (!parse_dtype(je.at(1).get<std::string>(), &dt))
          throw FormatError(fmt::format("{}: checkpoint writer state: unknown dtype", where));
        Entry e{je.at(0).get<std::string>(), dt, je.at(2).get<std::vector<int64_t>>(), je.at(3).get<uint64_t>(),
                je.at(4).get<uint64_t>()};
        if (e.offset != end || !names_.insert(e.name).second)
          throw FormatError(fmt::format("{}: checkpoint writer state is inconsistent at tensor '{}'", where, e.name));
        end += e.nbytes;
        s.entries.push_back(std::move(e));
      }
      if (end != s.bytes) throw FormatError(fmt::format("{}: checkpoint writer state is inconsistent", where));
      std::error_code ec;
      const auto size = fs::file_size(s.tmp_data, ec);
      if (ec || size < s.bytes)
        throw FormatError(fmt::format("{}: checkpoint data is {} (expected at least {} bytes)", s.tmp_data.string(),
                                      ec ? "missing" : fmt::format("{} bytes", size), s.bytes));
      fs::resize_file(s.tmp_data, s.bytes, ec);
      if (ec) throw IoError(fmt::format("{}: cannot truncate: {}", s.tmp_data.string(), ec.message()));
      s.fp = std::fopen(s.tmp_data.string().c_str(), "ab");
      if (!s.fp) throw IoError(fmt::format("{}: cannot open: {}", s.tmp_data.string(), errno_text()));
      total_bytes_ += s.bytes;
      shards_.push_back(std::move(s));
    }
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: checkpoint writer state: {}", where, e.what()));
  }
  if (total_bytes_ != st.value("total_bytes", uint64_t{0}))
    throw FormatError(fmt::format("{}: checkpoint writer state is inconsistent (total bytes)", where));
}

std::vector<std::string> SafetensorsWriter::finish() {
  ANGELSLIM_ASSERT(!finished_);
  if (shards_.empty()) open_shard();
  const std::size_t n = shards_.size();
  std::vector<std::string> names;
  json weight_map = json::object();
  for (std::size_t i = 0; i < n; ++i) {
    Shard& s = shards_[i];
    const std::string fname =
        n == 1 ? std::string("model.safetensors") : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
    json h = json::object();
    h["__metadata__"] = {{"format", "pt"}};
    for (const auto& e : s.entries) {
      h[e.name] = {{"dtype", std::string(dtype_name(e.dtype))}, {"shape", e.shape},
                   {"data_offsets", {e.offset, e.offset + e.nbytes}}};
      weight_map[e.name] = fname;
    }
    std::string hs = h.dump();
    // A header that fits the reservation fills it (the same bytes whether the data was buffered here or in a data
    // dir). In place: the data file has that space in front, gets the header there and becomes the shard; otherwise
    // the header and a copy of the data go to a new file.
    if (header_reserve_ > 0 && 8 + hs.size() <= header_reserve_) hs.resize(header_reserve_ - 8, ' ');
    const bool in_place = s.data_start > 0 && 8 + hs.size() == s.data_start;
    bool ok = true;
    fs::path tmp_final;
    std::FILE* out = nullptr;
    if (in_place) {
      tmp_final = s.tmp_data;
      out = std::exchange(s.fp, nullptr);
      ok = std::fflush(out) == 0 && ::fseeko(out, 0, SEEK_SET) == 0;
    } else {
      if (std::fclose(s.fp) != 0) {
        s.fp = nullptr;
        throw IoError(fmt::format("{}: write failed: {}", s.tmp_data.string(), errno_text()));
      }
      s.fp = nullptr;
      while ((8 + hs.size()) % 8 != 0) hs.push_back(' ');
      tmp_final = dir_ / (".tmp-" + fname);
      out = std::fopen(tmp_final.string().c_str(), "wb");
      if (!out) throw IoError(fmt::format("{}: cannot create: {}", tmp_final.string(), errno_text()));
    }
    const uint64_t hl = hs.size();
    ok = ok && write_checked(&hl, 8, out) == 8;
    ok = ok && write_checked(hs.data(), hs.size(), out) == hs.size();
    std::FILE* in = nullptr;
    if (!in_place) {
      in = ok ? std::fopen(s.tmp_data.string().c_str(), "rb") : nullptr;
      if (!in || ::fseeko(in, static_cast<off_t>(s.data_start), SEEK_SET) != 0) ok = false;
      std::vector<char> buf(1 << 22);
      uint64_t copied = 0;
      while (ok && in) {
        const std::size_t r = std::fread(buf.data(), 1, buf.size(), in);
        if (r == 0) break;
        ok = write_checked(buf.data(), r, out) == r;
        copied += r;
      }
      if (ok && copied != s.bytes) {
        errno = EIO;
        ok = false;
      }
    }
    ok = ok && sync_stream(out);
    const std::string why = ok ? std::string() : errno_text();
    if (in) std::fclose(in);
    const bool closed = std::fclose(out) == 0;
    if (!ok || !closed) {
      const std::string reason = ok ? errno_text() : why;
      std::error_code ec;
      if (!in_place) fs::remove(tmp_final, ec);  // in place: the data file goes with the writer
      throw IoError(fmt::format("{}: write failed: {}", (dir_ / fname).string(), reason));
    }
    std::error_code ec;
    fs::rename(tmp_final, dir_ / fname, ec);
    if (ec) throw IoError(fmt::format("{}: rename failed: {}", (dir_ / fname).string(), ec.message()));
    names.push_back(fname);
  }
  if (n > 1) {
    json idx = {{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", weight_map}};
    write_file_atomic(dir_ / "model.safetensors.index.json", idx.dump(2));
  }
  // Only now is the buffered data no longer needed (a failure above leaves it for a resumed run).
  finished_ = true;
  for (auto& s : shards_) {
    std::error_code ec;
    fs::remove(s.tmp_data, ec);
  }
  return names;
}

}  // namespace angelslim
