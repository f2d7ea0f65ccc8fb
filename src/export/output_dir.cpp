// Output directory life cycle; see include/angelslim/export/output_dir.h.
#include "angelslim/export/output_dir.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "angelslim/core/error.h"

namespace angelslim {

namespace fs = std::filesystem;

namespace {

// Temporary directories ".tmp-<name>-<pid>" of runs of the same output that were killed (their process is gone).
void remove_stale_tmp_dirs(const fs::path& parent, const std::string& name) {
  const std::string prefix = ".tmp-" + name + "-";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() <= prefix.size() || n.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = n.substr(prefix.size());
    if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) continue;
    const pid_t pid = static_cast<pid_t>(std::atol(digits.c_str()));
    if (pid <= 0 || pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code ec2;
    fs::remove_all(e.path(), ec2);
  }
}

}  // namespace

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
  remove_stale_tmp_dirs(parent, final_.filename().string());
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
