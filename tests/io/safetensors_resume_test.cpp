// The writer's resumable mode (pipeline/resume.h): state() after some tensors, more bytes appended and a new
// writer restore()d from that state, then the rest added, gives exactly the files of an uninterrupted writer;
// a damaged state or a truncated data file is a FormatError. Also the ENOSPC test hook of write_checked.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "angelslim/core/error.h"
#include "angelslim/io/safetensors.h"

namespace fs = std::filesystem;

namespace angelslim {
namespace {

struct Dir {
  fs::path p;
  explicit Dir(const std::string& tag) {
    static int n = 0;
    p = fs::temp_directory_path() / ("as-wr-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    fs::remove_all(p);
    fs::create_directories(p);
  }
  ~Dir() { fs::remove_all(p); }
};

std::vector<uint8_t> bytes_of(int i) {
  std::vector<uint8_t> v(static_cast<std::size_t>(40 + 24 * i));
  std::mt19937 rng(static_cast<uint32_t>(i));
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

void add(SafetensorsWriter& w, int i) {
  const auto b = bytes_of(i);
  w.add("t" + std::to_string(i), DType::kU8, {static_cast<int64_t>(b.size())}, b);
}

TEST(WriterResume, RestoredWriterWritesTheSameFiles) {
  constexpr int kTensors = 12, kCut = 7;
  constexpr uint64_t kShard = 300;  // several shards
  Dir ref("ref"), out("out"), data("data");
  {
    SafetensorsWriter w(ref.p, kShard);
    for (int i = 0; i < kTensors; ++i) add(w, i);
    w.finish();
  }
  nlohmann::json st;
  {
    SafetensorsWriter w(out.p, kShard);
    w.set_data_dir(data.p);
    for (int i = 0; i < kCut; ++i) add(w, i);
    w.sync();
    st = w.state();
    add(w, kCut);  // written after the state was taken, then the process "dies"
    add(w, kCut + 1);
  }
  ASSERT_FALSE(fs::is_empty(data.p)) << "the data dir survives an unfinished writer";
  {
    SafetensorsWriter w(out.p, kShard);
    w.set_data_dir(data.p);
    w.restore(st);
    for (int i = kCut; i < kTensors; ++i) add(w, i);
    w.finish();
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(ref.p)) names.push_back(e.path().filename().string());
  ASSERT_GT(names.size(), 2u);
  for (const auto& n : names) {
    ASSERT_TRUE(fs::exists(out.p / n)) << n;
    EXPECT_TRUE(read_file(ref.p / n) == read_file(out.p / n)) << n;
  }
  std::size_t n_out = 0;
  for (const auto& e : fs::directory_iterator(out.p)) n_out += e.path().filename().string()[0] != '.';
  EXPECT_EQ(n_out, names.size());
  EXPECT_TRUE(fs::is_empty(data.p)) << "finish() drops the buffered data";
}

TEST(WriterResume, DamagedStateIsAFormatError) {
  Dir out("out"), data("data");
  nlohmann::json st;
  {
    SafetensorsWriter w(out.p, 1000);
    w.set_data_dir(data.p);
    for (int i = 0; i < 3; ++i) add(w, i);
    w.sync();
    st = w.state();
  }
  {
    auto bad = st;
    bad["shards"][0]["entries"][1][3] = 5;  // offset no longer follows the previous tensor
    SafetensorsWriter w(out.p, 1000);
    w.set_data_dir(data.p);
    EXPECT_THROW(w.restore(bad), FormatError);
  }
  fs::resize_file(data.p / "shard-0.data", 10);
  SafetensorsWriter w(out.p, 1000);
  w.set_data_dir(data.p);
  EXPECT_THROW(w.restore(st), FormatError);
}

}  // namespace
}  // namespace angelslim
