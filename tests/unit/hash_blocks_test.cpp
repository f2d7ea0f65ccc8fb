// SHA-256 over many lengths and update splits against Python hashlib goldens (python3 -c "import hashlib; ..."
// over the bytes (31·i + 7) mod 256): exercises the multi-block path (SHA-NI where the CPU has it, otherwise the
// portable one), the buffered tail, and the padding boundaries 55/56/63/64.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "angelslim/core/hash.h"

namespace angelslim {
namespace {

TEST(Sha256Blocks, MatchesHashlibAcrossLengthsAndSplits) {
  const std::vector<std::pair<std::size_t, std::string>> golden = {
      {0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {1, "ca358758f6d27e6cf45272937977a748fd88391db679ceda7dc7bf1f005ee879"},
      {55, "8aa994584139d128848eeebc4e815639ba5ab6e6e39574195a63ac4f14f7c43b"},
      {56, "ad574708f75c044c9b85de64cb568ee7711ff4f36448c6242f053ba8f6cc2b63"},
      {63, "280ed3e8ff1df845b2e7dfe6ac6cee817bef20e783cc65abc41b818b4d2fe076"},
      {64, "c6ab9724ade5b6a7a1edfffb12f3aa9181351355af8fd08c919952ad211339dd"},
      {65, "788367c73c7ddf4c53f65e68cc0d943e6227ab55b0e78ba63ace822b1c6301c0"},
      {127, "192409cd280e14b743642ad1343fbd3e82d9305de72c078117745a679210cc3d"},
      {128, "cc548ca2dec1f6fe4f58b2e27aa9c7521607df1130d140b55a4dad0665302356"},
      {1000, "5097e7d587352f5097062ae679f37bda5802d9f875aba14c8cb4d1a188ada179"},
      {100000, "731620161155f68e1209f22bc34a726bf5a583f40acf23ae55684b674fdbebf2"},
      {1048593, "4127c61cb879e78b603e0b3e807c6a4127b1ec5a56630c8fb6a279043649e99a"},
  };
  for (const auto& [n, want] : golden) {
    std::string data(n, '\0');
    for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<char>((i * 31 + 7) & 255);
    EXPECT_EQ(sha256_hex(data), want) << n;
    for (std::size_t split : {std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{65}, std::size_t{4097}}) {
      Sha256 h;
      for (std::size_t off = 0; off < n; off += split) h.update(data.data() + off, std::min(split, n - off));
      EXPECT_EQ(h.hex_digest(), want) << n << " in pieces of " << split;
    }
  }
}

}  // namespace
}  // namespace angelslim
