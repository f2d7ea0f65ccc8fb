// SHA-256 against the FIPS 180-4 / NIST CAVS example vectors, padding boundaries (reference digests from
// Python hashlib), streaming updates and sha256_file.
#include "angelslim/core/hash.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "angelslim/core/error.h"

namespace angelslim {
namespace {

TEST(Sha256, StandardVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 448-bit message (FIPS 180-4 example "two block message").
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // 896-bit message.
  EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
                       "lmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PaddingBoundaries) {
  // Message = bytes 0, 1, ..., n-1; digests from Python hashlib.sha256(bytes(range(n))).
  const std::vector<std::pair<int, const char*>> cases = {
      {55, "463eb28e72f82e0a96c0a4cc53690c571281131f672aa229e0d45ae59b598b59"},
      {56, "da2ae4d6b36748f2a318f23e7ab1dfdf45acdc9d049bd80e59de82a60895f562"},
      {63, "29af2686fd53374a36b0846694cc342177e428d1647515f078784d69cdb9e488"},
      {64, "fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108"},
      {65, "4bfd2c8b6f1eec7a2afeb48b934ee4b2694182027e6d0fc075074f2fabb31781"},
      {119, "da18797ed7c3a777f0847f429724a2d8cd5138e6ed2895c3fa1a6d39d18f7ec6"},
      {120, "f52b23db1fbb6ded89ef42a23ce0c8922c45f25c50b568a93bf1c075420bbb7c"},
  };
  for (const auto& [n, want] : cases) {
    std::string msg;
    for (int i = 0; i < n; ++i) msg.push_back(static_cast<char>(i));
    EXPECT_EQ(sha256_hex(msg), want) << "n=" << n;
  }
}

TEST(Sha256, StreamingInUnevenChunksMatchesOneShot) {
  const std::string msg(1000000, 'a');
  Sha256 h;
  std::size_t pos = 0, step = 1;
  while (pos < msg.size()) {
    const std::size_t take = std::min(step, msg.size() - pos);
    h.update(msg.data() + pos, take);
    pos += take;
    step = step * 7 % 131 + 1;  // 1..131 bytes: crosses block boundaries at every offset
  }
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // hex_digest resets the state: the object hashes a fresh message afterwards.
  h.update("abc");
  EXPECT_EQ(h.hex_digest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, File) {
  const auto path = std::filesystem::temp_directory_path() / "angelslim_hash_test.bin";
  {
    std::ofstream out(path, std::ios::binary);
    const std::string msg(1000000, 'a');
    out.write(msg.data(), static_cast<std::streamsize>(msg.size()));
  }
  EXPECT_EQ(sha256_file(path), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  std::filesystem::remove(path);
  EXPECT_THROW(sha256_file(path), IoError);
}

}  // namespace
}  // namespace angelslim
