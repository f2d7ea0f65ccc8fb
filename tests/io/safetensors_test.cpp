// safetensors reader/writer: round trips, sharding, and one hand-made corrupt file per failure class.
#include "angelslim/io/safetensors.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "angelslim/core/error.h"

namespace fs = std::filesystem;

namespace angelslim {
namespace {

class TmpDir {
 public:
  TmpDir() {
    path_ = fs::temp_directory_path() / ("as-st-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TmpDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

void write_raw(const fs::path& p, const std::string& header, const std::string& data, int64_t header_len = -1) {
  std::ofstream f(p, std::ios::binary);
  uint64_t n = header_len >= 0 ? static_cast<uint64_t>(header_len) : header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

template <class E>
void expect_error(const fs::path& p, const std::string& needle) {
  try {
    SafetensorsFile f(p);
    FAIL() << "no error for " << needle;
  } catch (const E& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

TEST(Safetensors, RoundTripSingleShard) {
  TmpDir d;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> a(6 * 5);
  for (auto& v : a) v = nd(rng);
  std::vector<uint16_t> b(7);
  for (auto& v : b) v = f32_to_bf16(nd(rng));
  {
    SafetensorsWriter w(d.path());
    w.add_f32("a", {6, 5}, a);
    w.add("b", DType::kBF16, {7}, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(b.data()), 14));
    const auto files = w.finish();
    ASSERT_EQ(files, std::vector<std::string>{"model.safetensors"});
  }
  TensorStore st(d.path());
  EXPECT_EQ(st.get("a").shape, (std::vector<int64_t>{6, 5}));
  EXPECT_EQ(st.get("a").to_f32(), a);
  EXPECT_EQ(st.get("b").dtype, DType::kBF16);
  const auto bf = st.get("b").to_f32();
  for (std::size_t i = 0; i < b.size(); ++i) EXPECT_EQ(bf[i], bf16_to_f32(b[i]));
  // Header padded so that data starts at a multiple of 8; no leftover temporary files.
  std::ifstream f(d.path() / "model.safetensors", std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  for (const auto& e : fs::directory_iterator(d.path())) EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos);
}

// reserve_header: the header is written into the space left in front of the data (padded with spaces, so the data
// starts exactly at the reservation); a reservation too small for the header falls back to copying the data. Both
// files read back with the same tensors, and no temporary file is left.
TEST(Safetensors, ReservedHeaderInPlaceAndFallback) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<std::vector<float>> vals(5, std::vector<float>(37));
  for (auto& v : vals)
    for (auto& x : v) x = nd(rng);
  for (const uint64_t reserve : {uint64_t{4093}, uint64_t{40}}) {
    TmpDir d;
    {
      SafetensorsWriter w(d.path(), 2 * 37 * 4 + 10);  // two tensors a shard: three shards
      w.reserve_header(reserve);
      for (std::size_t i = 0; i < vals.size(); ++i) {
        w.add_f32("tensor." + std::to_string(i), {37}, vals[i]);
        w.start_writeback();
      }
      EXPECT_EQ(w.finish().size(), 3u);
    }
    TensorStore st(d.path());
    for (std::size_t i = 0; i < vals.size(); ++i) EXPECT_EQ(st.get("tensor." + std::to_string(i)).to_f32(), vals[i]);
    for (const auto& e : fs::directory_iterator(d.path()))
      EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
    std::ifstream f(d.path() / "model-00001-of-00003.safetensors", std::ios::binary);
    uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 8);
    if (reserve > 1000) {
      EXPECT_EQ(8 + n, 4096u) << "the header fills the reservation (rounded up to 8)";
      EXPECT_EQ(fs::file_size(d.path() / "model-00001-of-00003.safetensors"), 4096u + 2 * 37 * 4);
      // The data buffered in a data dir (resume checkpoints) is copied behind the same padded header.
      TmpDir d2, data;
      {
        SafetensorsWriter w(d2.path(), 2 * 37 * 4 + 10);
        w.set_data_dir(data.path());
        w.reserve_header(reserve);
        for (std::size_t i = 0; i < vals.size(); ++i) w.add_f32("tensor." + std::to_string(i), {37}, vals[i]);
        w.finish();
      }
      for (int k = 1; k <= 3; ++k) {
        const std::string f = fmt::format("model-0000{}-of-00003.safetensors", k);
        EXPECT_EQ(read_file(d.path() / f), read_file(d2.path() / f)) << f;
      }
    } else {
      EXPECT_LT(8 + n, 200u) << "the fallback copy pads the header to 8 bytes only";
      EXPECT_EQ((8 + n) % 8, 0u);
    }
  }
}

TEST(Safetensors, ShardsAndIndex) {
  TmpDir d;
  std::vector<float> v(100, 1.5f);
  {
    SafetensorsWriter w(d.path(), 900);  // 400 bytes per tensor: two per shard
    for (int i = 0; i < 5; ++i) w.add_f32("t" + std::to_string(i), {100}, v);
    std::vector<float> big(300, 2.0f);  // larger than a shard: its own shard
    w.add_f32("big", {300}, big);
    const auto files = w.finish();
    EXPECT_EQ(files.size(), 4u);
    EXPECT_EQ(files[0], "model-00001-of-00004.safetensors");
  }
  const auto idx = nlohmann::json::parse(read_file(d.path() / "model.safetensors.index.json"));
  EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), 5u * 400 + 1200);
  EXPECT_EQ(idx["weight_map"]["big"], "model-00004-of-00004.safetensors");
  TensorStore st(d.path());
  EXPECT_EQ(st.all().size(), 6u);
  EXPECT_EQ(st.get("t4").to_f32(), v);
  EXPECT_THROW(st.get("nope"), FormatError);
}

TEST(Safetensors, CorruptFiles) {
  TmpDir d;
  const fs::path p = d.path() / "x.safetensors";
  const std::string good = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  write_raw(p, good, std::string(8, '\0'));
  EXPECT_NO_THROW(SafetensorsFile{p});

  write_raw(p, good, std::string(4, '\0'));  // truncated data
  expect_error<FormatError>(p, "outside the data area");
  write_raw(p, good, std::string(8, '\0'), 1000);  // header length beyond the file
  expect_error<FormatError>(p, "truncated");
  write_raw(p, good, std::string(8, '\0'), int64_t(1) << 40);  // absurd header length
  expect_error<FormatError>(p, "exceeds the limit");
  write_raw(p, "{not json", "");
  expect_error<FormatError>(p, "not valid JSON");
  write_raw(p, "[1,2]", "");
  expect_error<FormatError>(p, "not a JSON object");
  write_raw(p, R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  expect_error<FormatError>(p, "unknown dtype");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  expect_error<FormatError>(p, "expected 12");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::string(12, '\0'));
  expect_error<FormatError>(p, "overlap");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", std::string(16, '\0'));
  expect_error<FormatError>(p, "gap");
  write_raw(p, good, std::string(12, '\0'));  // trailing bytes
  expect_error<FormatError>(p, "trailing");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  expect_error<FormatError>(p, "non-negative");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, '\0'));
  expect_error<FormatError>(p, "data_offsets");
  {
    std::ofstream f(p, std::ios::binary);
    f.write("abc", 3);
  }
  expect_error<FormatError>(p, "at least 8");
  expect_error<IoError>(d.path() / "missing.safetensors", "cannot open");
}

TEST(Safetensors, ShardedIndexErrors) {
  TmpDir d;
  std::vector<float> v(4, 1.0f);
  {
    SafetensorsWriter w(d.path(), 20);
    w.add_f32("a", {4}, v);
    w.add_f32("b", {4}, v);
    w.finish();
  }
  const fs::path idx = d.path() / "model.safetensors.index.json";
  auto j = nlohmann::json::parse(read_file(idx));
  // A missing shard.
  fs::rename(d.path() / "model-00002-of-00002.safetensors", d.path() / "moved");
  try {
    TensorStore st(d.path());
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00002.safetensors"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
  fs::rename(d.path() / "moved", d.path() / "model-00002-of-00002.safetensors");
  // A tensor the index places in the wrong shard.
  j["weight_map"]["a"] = "model-00002-of-00002.safetensors";
  write_file_atomic(idx, j.dump());
  EXPECT_THROW(TensorStore{d.path()}, FormatError);
  write_file_atomic(idx, "{broken");
  EXPECT_THROW(TensorStore{d.path()}, FormatError);
  fs::remove(idx);
  EXPECT_THROW(TensorStore{d.path()}, InvalidInput);  // neither model.safetensors nor an index
}

}  // namespace
}  // namespace angelslim
