// A DeviceMatrix that is host memory in disguise, for tests of the device routes on the CPU: it counts its
// downloads (to_host calls) in `downloads`, when given.
#pragma once
#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "angelslim/core/device_matrix.h"

namespace angelslim::test {

class HostBackedMatrix : public DeviceMatrix {
 public:
  HostBackedMatrix(int64_t rows, int64_t cols, std::vector<float> m, std::atomic<int>* downloads = nullptr)
      : rows_(rows), cols_(cols), m_(std::move(m)), downloads_(downloads) {}
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  std::vector<float> to_host() const override {
    if (downloads_) ++*downloads_;
    return m_;
  }

 private:
  int64_t rows_, cols_;
  std::vector<float> m_;
  std::atomic<int>* downloads_;
};

}  // namespace angelslim::test
