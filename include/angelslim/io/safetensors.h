// safetensors reading (mmap, validated header; single file or sharded with model.safetensors.index.json)
// and writing (sharded, with index; files appear under their final names only when complete). SPEC 1.2, 5.1.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "angelslim/core/dtype.h"

namespace angelslim {

// A read-only view of one tensor inside a mapped file.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // row-major, little-endian, nbytes long
  std::size_t nbytes = 0;
  std::string file;  // the file it lives in (for messages)

  int64_t numel() const;
  // Converts to f32 (BF16, F16, F32, F8_E4M3, F64); throws Unsupported for integer types.
  std::vector<float> to_f32() const;
};

// The tensors and metadata of a safetensors file's bytes (the views point into those bytes).
struct SafetensorsContent {
  std::map<std::string, TensorView> tensors;
  std::map<std::string, std::string> metadata;
};
// Validates and indexes a whole safetensors file held in memory (the checks of SafetensorsFile below);
// `origin` names the source in messages. Throws FormatError.
SafetensorsContent parse_safetensors(std::span<const uint8_t> bytes, const std::string& origin);
// Parses model.safetensors.index.json text: tensor name -> shard file name (a plain name, no '/').
// Throws FormatError naming `origin`.
std::map<std::string, std::string> parse_safetensors_index(std::string_view text, const std::string& origin);

// One mapped .safetensors file. The header is validated before any tensor data is touched:
// size limit (100 MB), UTF-8 JSON object, known dtypes, offsets inside the data area, byte length ==
// numel * dtype size, no overlaps (regions must tile the data area).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  void* map_ = nullptr;
  std::size_t size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: model.safetensors, or model.safetensors.index.json + shards.
class TensorStore {
 public:
  explicit TensorStore(const std::filesystem::path& dir);
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // Throws FormatError naming the tensor and directory when missing.
  const TensorView& get(const std::string& name) const;
  const std::map<std::string, const TensorView*>& all() const { return index_; }
  const std::filesystem::path& dir() const { return dir_; }
  // Names of the shard files (relative to dir).
  std::vector<std::string> files() const;

 private:
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

// Writes tensors into shards of at most `max_shard_bytes` (a tensor larger than the limit gets its own shard),
// in the order added. finish() writes model.safetensors (one shard) or model-0000k-of-0000n.safetensors + index.
// Data is buffered to temporary files in `dir` named ".tmp-*" and renamed only when everything is written.
// Resumable runs (pipeline/resume.h) keep the buffered data in a checkpoint folder instead (set_data_dir) and
// record state() after each layer; a restarted run restore()s it and appends the same bytes from there.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::filesystem::path dir, uint64_t max_shard_bytes = 5000000000ULL);
  // Removes the buffered data unless a data dir was set (that data belongs to the checkpoint).
  ~SafetensorsWriter();
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, std::span<const uint8_t> bytes);
  void add_f32(const std::string& name, std::vector<int64_t> shape, std::span<const float> values);
  // Returns the final file names (relative to dir). The shards are fsync'ed before they get their final names.
  std::vector<std::string> finish();
  uint64_t total_bytes() const { return total_bytes_; }

  // Buffers shard data as `data_dir`/shard-<k>.data (kept on destruction). Call before the first add().
  void set_data_dir(std::filesystem::path data_dir);
  // Flushes the buffered data to stable storage (fflush + fsync). Throws IoError.
  void sync();
  // Leaves `bytes` (rounded up to a multiple of 8) free at the start of each shard for its header: finish() then
  // writes the header there, padded with spaces to fill it (SPEC 1.2 allows trailing whitespace), and renames the
  // file instead of copying the data behind a header; a header that does not fit falls back to the copy. With a data
  // dir the data is copied, behind the same padded header (the same bytes either way). Call before the first add()
  // and before restore().
  void reserve_header(uint64_t bytes);
  // Hands the data written so far to the kernel's writeback (Linux sync_file_range; elsewhere only fflush), so that
  // finish()'s fsync has less left to wait for. Throws IoError when the flush fails.
  void start_writeback();
  // The tensors added so far and the length of each buffered shard file, as JSON.
  nlohmann::json state() const;
  // Continues from a state() of a writer with the same data dir: each shard file is cut to its recorded length
  // (bytes written after that state are dropped) and reopened for appending. Throws FormatError when a file is
  // missing or shorter than recorded.
  void restore(const nlohmann::json& state);

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t offset;  // in the shard's data area
    uint64_t nbytes;
  };
  struct Shard {
    std::filesystem::path tmp_data;
    std::FILE* fp = nullptr;
    uint64_t data_start = 0;  // bytes left free for the header (reserve_header)
    uint64_t bytes = 0;
    std::vector<Entry> entries;
  };
  void open_shard();
  std::filesystem::path dir_;
  uint64_t max_shard_bytes_;
  uint64_t total_bytes_ = 0;
  uint64_t header_reserve_ = 0;
  std::vector<Shard> shards_;
  std::set<std::string> names_;
  std::filesystem::path data_dir_;  // empty: buffer in dir_ as ".tmp-shard-<k>.data"
  bool finished_ = false;
};

// Writes `content` to `path` atomically (temporary file + fsync + rename). Throws IoError.
void write_file_atomic(const std::filesystem::path& path, std::string_view content);
// fsync of a directory (makes renames inside it durable). Throws IoError.
void fsync_dir(const std::filesystem::path& dir);
// fwrite for every output file of the program. Test hook: with ANGELSLIM_FAULT_WRITE=N in the environment the N-th
// call of the process (1-based) writes nothing and fails with ENOSPC, as on a full disk.
std::size_t write_checked(const void* data, std::size_t n, std::FILE* f);
// Reads a whole file. Throws IoError naming the path.
std::string read_file(const std::filesystem::path& path);

}  // namespace angelslim
