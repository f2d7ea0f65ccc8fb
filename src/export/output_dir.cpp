// Output directory life cycle; see include/angelslim/export/output_dir.h.
#include "angelslim/export/output_dir.h"

#include <unistd.h>

#include "angelslim/core/error.h"

namespace angelslim {

namespace fs = std::filesystem;

OutputDir::OutputDir(fs::path final_dir, bool overwrite) : final_(std::move(final_dir)), overwrite_(overwrite) {
  final_ = final_.lexically_normal();
  if (final_.filename().empty()) final_ = final_.parent_path();
  std::error_code ec;
  if (fs::exists(final_, ec)) {
    if (!fs::is_directory(final_))
      throw InvalidInput(fmt::format("{}: output path exists and is not a directory", final_.string()));
    if (!fs::is_empty(final_) && !overwrite_)
      throw InvalidInput(fmt::format("{}: output directory exists and is not empty (pass --overwrite to replace it)",
                                     final_.string()));
  }
  const fs::path parent = final_.has_parent_path() ? final_.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  if (ec) throw IoError(fmt::format("{}: cannot create directory: {}", parent.string(), ec.message()));
  tmp_ = parent / fmt::format(".tmp-{}-{}", final_.filename().string(), ::getpid());
  fs::remove_all(tmp_, ec);
  fs::create_directory(tmp_, ec);
  if (ec) throw IoError(fmt::format("{}: cannot create directory: {}", tmp_.string(), ec.message()));
}

OutputDir::~OutputDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void OutputDir::commit() {
  std::error_code ec;
  fs::path old;
  if (fs::exists(final_, ec)) {
    old = final_.parent_path() / fmt::format(".old-{}-{}", final_.filename().string(), ::getpid());
    fs::rename(final_, old, ec);
    if (ec) throw IoError(fmt::format("{}: cannot move the old output aside: {}", final_.string(), ec.message()));
  }
  fs::rename(tmp_, final_, ec);
  if (ec) {
    std::error_code ec2;
    if (!old.empty()) fs::rename(old, final_, ec2);
    throw IoError(fmt::format("{}: cannot publish the output: {}", final_.string(), ec.message()));
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

void copy_aux_files(const fs::path& src, const fs::path& dst) {
  for (const auto& e : fs::directory_iterator(src)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (name == "config.json" || name == "model.safetensors.index.json") continue;
    if (name.find(".safetensors") != std::string::npos) continue;  // weights (also compressed copies)
    if (!name.empty() && name[0] == '.') continue;
    std::error_code ec;
    fs::copy_file(e.path(), dst / name, fs::copy_options::overwrite_existing, ec);
    if (ec) throw IoError(fmt::format("{}: cannot copy to {}: {}", e.path().string(), dst.string(), ec.message()));
  }
}

}  // namespace angelslim
