// safetensors reading (mmap, validated header; single file or sharded with model.safetensors.index.json)
// and writing (sharded, with index; files appear under their final names only when complete). SPEC 1.2, 5.1.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
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
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::filesystem::path dir, uint64_t max_shard_bytes = 5000000000ULL);
  ~SafetensorsWriter();
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, std::span<const uint8_t> bytes);
  void add_f32(const std::string& name, std::vector<int64_t> shape, std::span<const float> values);
  // Returns the final file names (relative to dir).
  std::vector<std::string> finish();
  uint64_t total_bytes() const { return total_bytes_; }

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
    uint64_t bytes = 0;
    std::vector<Entry> entries;
  };
  void open_shard();
  std::filesystem::path dir_;
  uint64_t max_shard_bytes_;
  uint64_t total_bytes_ = 0;
  std::vector<Shard> shards_;
  bool finished_ = false;
};

// Writes `content` to `path` atomically (temporary file + rename). Throws IoError.
void write_file_atomic(const std::filesystem::path& path, std::string_view content);
// Reads a whole file. Throws IoError naming the path.
std::string read_file(const std::filesystem::path& path);

}  // namespace angelslim
