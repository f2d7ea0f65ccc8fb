// Output directory life cycle: everything is written into a hidden temporary sibling directory that is
// renamed to the final name only after the whole output has been written and verified.
#pragma once
#include <filesystem>

namespace angelslim {

class OutputDir {
 public:
  // Refuses (InvalidInput) an existing non-empty `final_dir` unless overwrite. Creates the temporary directory.
  OutputDir(std::filesystem::path final_dir, bool overwrite);
  // Removes the temporary directory unless commit() succeeded.
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  const std::filesystem::path& tmp() const { return tmp_; }
  const std::filesystem::path& final_dir() const { return final_; }
  // Atomically publishes the temporary directory under the final name (replacing an old one if allowed).
  void commit();

 private:
  std::filesystem::path final_, tmp_;
  bool overwrite_, committed_ = false;
};

// Copies every non-weight file of a checkpoint (tokenizer, templates, generation config, *.py, processor
// configs, LICENSE/README) into `dst`: all regular files except *.safetensors, the index and config.json.
void copy_aux_files(const std::filesystem::path& src, const std::filesystem::path& dst);

}  // namespace angelslim
