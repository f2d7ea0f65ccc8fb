// Typed errors. Only main() catches: InvalidInput/FormatError/IoError/Unsupported exit 2, Internal exits 1.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace angelslim {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  virtual int exit_code() const { return 2; }
};
// Bad user input: a CLI flag, a YAML key, a data file with the wrong content.
class InvalidInput : public Error {
 public:
  using Error::Error;
};
// A file whose bytes do not follow its format (safetensors header, JSON, tokenizer).
class FormatError : public Error {
 public:
  using Error::Error;
};
// The operating system refused (open, read, write, rename, mmap).
class IoError : public Error {
 public:
  using Error::Error;
};
// A valid input we do not support (architecture, rope type, option).
class Unsupported : public Error {
 public:
  using Error::Error;
};
// A bug in this program.
class Internal : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 1; }
};

}  // namespace angelslim

// CHECK for conditions reachable from input: throws the given type with a formatted message.
#define ANGELSLIM_CHECK(cond, ExcType, ...)                       \
  do {                                                            \
    if (!(cond)) throw ::angelslim::ExcType(fmt::format(__VA_ARGS__)); \
  } while (0)

// ASSERT for programming errors.
#define ANGELSLIM_ASSERT(cond)                                                                 \
  do {                                                                                         \
    if (!(cond))                                                                               \
      throw ::angelslim::Internal(fmt::format("internal error: {} ({}:{})", #cond, __FILE__, __LINE__)); \
  } while (0)
