// Progress reporting: a redrawn bar with ETA and rate on a TTY, plain periodic lines otherwise.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace angelslim {

class Progress {
 public:
  // total: number of steps; unit: what a step counts ("tok", "layer").
  Progress(std::string label, int64_t total, std::string unit, bool enabled = true);
  ~Progress();
  void advance(int64_t steps = 1, const std::string& note = "");
  void finish();
  static void set_quiet(bool q);

 private:
  void draw(bool final);
  std::string label_, unit_, note_;
  int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool tty_, enabled_, finished_ = false;
};

}  // namespace angelslim
