// Progress bars on stderr; see include/angelslim/core/progress.h.
#include "angelslim/core/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace angelslim {

namespace {
bool g_quiet = false;
}

void Progress::set_quiet(bool q) { g_quiet = q; }

Progress::Progress(std::string label, int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), start_(std::chrono::steady_clock::now()),
      last_draw_(start_), tty_(::isatty(STDERR_FILENO) != 0), enabled_(enabled) {}

Progress::~Progress() {
  if (!finished_) finish();
}

void Progress::advance(int64_t steps, const std::string& note) {
  done_ += steps;
  note_ = note;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if ((tty_ && since > 0.1) || (!tty_ && since > 5.0) || done_ >= total_) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final) {
  if (g_quiet || !enabled_) return;
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = el > 0 ? static_cast<double>(done_) / el : 0.0;
  const double eta = rate > 0 && total_ > done_ ? static_cast<double>(total_ - done_) / rate : 0.0;
  const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  std::string line;
  if (tty_) {
    constexpr int kWidth = 28;
    const int fill = static_cast<int>(frac * kWidth);
    line = fmt::format("\r{} [{}{}] {}/{} {:.1f} {}/s {} {}", label_, std::string(fill, '#'),
                       std::string(kWidth - fill, '.'), done_, total_, rate, unit_,
                       final ? fmt::format("{:.1f}s", el) : fmt::format("ETA {:.0f}s", eta), note_);
    std::fprintf(stderr, "%s\033[K%s", line.c_str(), final ? "\n" : "");
  } else {
    line = fmt::format("{}: {}/{} ({:.0f}%) {:.1f} {}/s {} {}\n", label_, done_, total_, frac * 100, rate, unit_,
                       final ? fmt::format("done in {:.1f}s", el) : fmt::format("ETA {:.0f}s", eta), note_);
    std::fputs(line.c_str(), stderr);
  }
  std::fflush(stderr);
}

}  // namespace angelslim
