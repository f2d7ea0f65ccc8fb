// A matrix held in a device's memory (a Gram matrix a calibration pass left there, a GPU solver's dequantized
// weight): the backend's own type, opaque to the host code, which can only copy it back.
#pragma once
#include <cstdint>
#include <vector>

namespace angelslim {

class DeviceMatrix {
 public:
  virtual ~DeviceMatrix() = default;
  virtual int64_t rows() const = 0;
  virtual int64_t cols() const = 0;
  // [rows, cols] fp32 row-major on the host (a download; safe from any thread).
  virtual std::vector<float> to_host() const = 0;
};

}  // namespace angelslim
