// Resumable runs (docs/reliability.md): after every completed decoder layer the pipeline persists what a restarted
// run needs to continue byte-identically (the output writer's buffered tensors and the next layer's calibration
// inputs) in a checkpoint folder next to the output's temporary directory, with a manifest that records the layer
// count and the fingerprints of config, model and calibration data. Every file is written to a temporary name,
// fsync'ed and renamed, and the manifest last, so a run killed at any moment leaves the previous consistent state.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "angelslim/io/safetensors.h"

namespace angelslim {

// What a checkpoint must match to be continued: sha256 hex digests.
struct RunFingerprint {
  std::string config;  // the effective run configuration (YAML with defaults and CLI overrides, device, version)
  std::string model;   // config.json, the index and every safetensors file of the input checkpoint
  std::string data;    // the calibration token ids (tokenizer, template, data file, sampling); empty without
  nlohmann::json to_json() const { return {{"config", config}, {"model", model}, {"data", data}}; }
};

// sha256 over config.json, model.safetensors.index.json (when present) and the named safetensors files of `dir`,
// one thread per file.
std::string model_fingerprint(const std::filesystem::path& dir, const std::vector<std::string>& shard_files);
// sha256 over the calibration samples (lengths and ids).
std::string data_fingerprint(const std::vector<std::vector<int32_t>>& samples);

// The state a restarted run continues from.
struct ResumeState {
  int64_t layers_done = 0;         // decoder layers 0 .. layers_done-1 are complete
  nlohmann::json writer;           // SafetensorsWriter::state()
  nlohmann::json layers;           // the per-layer report entries so far
  nlohmann::json warnings;         // warnings of the completed layers
  std::vector<float> activations;  // the inputs of layer layers_done (empty without calibration)
};

class Checkpoint {
 public:
  // <parent of the output>/.ckpt-<output name>.
  static std::filesystem::path folder_for(const std::filesystem::path& final_dir);

  // Creates the folder when needed and locks it (IoError when another run holds it).
  explicit Checkpoint(std::filesystem::path folder);
  // Removes the folder unless it holds a completed layer (then the state stays for the next run).
  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  // Whether a manifest exists (a state written by an earlier run).
  bool has_state() const;
  // Reads the state when its fingerprint equals `fp`. Returns nullopt and sets *why (one line) when the folder holds
  // a state that cannot be continued (another config, model or data, another version, unreadable files).
  std::optional<ResumeState> load(const RunFingerprint& fp, std::string* why);
  // Deletes every file of the folder (keeps the folder and the lock).
  void clear();
  // Persists the state after layer `layers_done - 1`: syncs the writer's data, writes the activations and then the
  // manifest (each atomically), and drops the previous activations.
  void save(const RunFingerprint& fp, int64_t layers_done, SafetensorsWriter& writer, const nlohmann::json& layers,
            const nlohmann::json& warnings, std::span<const float> activations);
  // The run succeeded: removes the folder.
  void remove();

 private:
  std::filesystem::path dir_;
  int lock_fd_ = -1;
  bool saved_ = false;  // this run wrote a manifest
  bool removed_ = false;
};

}  // namespace angelslim
