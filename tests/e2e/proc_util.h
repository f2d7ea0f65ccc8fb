// Running the real binary as a child process (fork/exec) for the reliability tests: exit status or signal, its
// output in a file, extra environment variables, and optionally as an unprivileged user.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "angelslim/io/safetensors.h"

namespace angelslim::test {

// Starts ANGELSLIM_BIN with `args`; stdout goes to `out_log`, stderr to `err_log`. `env` entries are "NAME=value",
// added to this process's environment. With drop_privileges and root, the child runs as nobody (65534) so that
// permission checks apply. Everything is prepared before fork(): the child only makes async-signal-safe calls.
inline pid_t spawn_bin(const std::vector<std::string>& args, const std::filesystem::path& out_log,
                       const std::filesystem::path& err_log, const std::vector<std::string>& env = {},
                       bool drop_privileges = false) {
  static std::string bin = ANGELSLIM_BIN;
  std::vector<std::string> arg_store = args;
  std::vector<char*> argv{bin.data()};
  for (auto& a : arg_store) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_store = env;
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  for (auto& kv : env_store) envp.push_back(kv.data());
  envp.push_back(nullptr);
  const bool as_nobody = drop_privileges && ::geteuid() == 0;
  const int out_fd = ::open(out_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  const int err_fd = ::open(err_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  std::fflush(stdout);  // the child must not repeat what this process has buffered
  std::fflush(stderr);
  const pid_t pid = (out_fd >= 0 && err_fd >= 0) ? ::fork() : -1;
  if (pid == 0) {
    if (::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) ::_exit(120);
    if (as_nobody && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(121);
    ::execve(bin.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  if (out_fd >= 0) ::close(out_fd);
  if (err_fd >= 0) ::close(err_fd);
  return pid;
}

// Exit status (>= 0) or -signal.
inline int wait_bin(pid_t pid) {
  if (pid < 0) return -1002;
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid) return -1000;
  return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? -WTERMSIG(st) : -1001;
}

struct BinResult {
  int status = -1;
  std::string out, err;
};

inline BinResult run_bin(const std::vector<std::string>& args, const std::filesystem::path& log_dir,
                         const std::vector<std::string>& env = {}, bool drop_privileges = false) {
  const auto o = log_dir / "stdout.txt", e = log_dir / "stderr.txt";
  BinResult r;
  r.status = wait_bin(spawn_bin(args, o, e, env, drop_privileges));
  r.out = read_file(o);
  r.err = read_file(e);
  return r;
}

// Names of the regular files of a directory, sorted.
inline std::vector<std::string> file_names(const std::filesystem::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file()) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

// Entries of `dir` whose name starts with `prefix`.
inline std::vector<std::string> entries_with_prefix(const std::filesystem::path& dir, const std::string& prefix) {
  std::vector<std::string> v;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) == 0) v.push_back(n);
  }
  return v;
}

}  // namespace angelslim::test
