// Shared helpers of the libFuzzer targets: where the fixture files are, and the rule that a parser may reject
// an input only with a typed user error (angelslim::Error other than Internal); anything else is a finding.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "angelslim/core/error.h"

namespace angelslim::fuzz {

// tests/data of the source tree, or $ANGELSLIM_FUZZ_DATA when the fuzzers run from a copied tree.
inline std::filesystem::path data_dir() {
  if (const char* env = std::getenv("ANGELSLIM_FUZZ_DATA")) return env;
  return std::filesystem::path(ANGELSLIM_SOURCE_DIR) / "tests" / "data";
}

// Runs `f`; a user error (InvalidInput, FormatError, IoError, Unsupported) is an accepted outcome and is
// printed when $ANGELSLIM_FUZZ_VERBOSE is set. Internal errors and foreign exceptions escape, which libFuzzer
// reports as a crash.
template <class F>
int guarded(F&& f) {
  try {
    f();
  } catch (const Internal&) {
    throw;
  } catch (const Error& e) {
    static const bool verbose = std::getenv("ANGELSLIM_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
  }
  return 0;
}

}  // namespace angelslim::fuzz
