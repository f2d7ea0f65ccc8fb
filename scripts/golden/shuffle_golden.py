# Golden for TextDataset.SeededShuffleIsDeterministicAndPortable: an independent MT19937-64 (checked
# against the C++ standard's 10000th output of mt19937_64 for the default seed) driving the documented
# Fisher-Yates with rejection sampling. Prints the permutation of 10 records for seed 42.
# Independent MT19937-64 (Matsumoto & Nishimura reference mt19937-64.c) + the documented Fisher-Yates.
M64 = (1 << 64) - 1
class MT64:
    NN, MM = 312, 156
    MATRIX_A = 0xB5026F5AA96619E9
    UM, LM = 0xFFFFFFFF80000000, 0x7FFFFFFF
    def __init__(self, seed):
        self.mt = [0] * self.NN
        self.mt[0] = seed & M64
        for i in range(1, self.NN):
            self.mt[i] = (6364136223846793005 * (self.mt[i-1] ^ (self.mt[i-1] >> 62)) + i) & M64
        self.mti = self.NN
    def next(self):
        if self.mti >= self.NN:
            mt = self.mt
            for i in range(self.NN):
                x = (mt[i] & self.UM) | (mt[(i + 1) % self.NN] & self.LM)
                xA = x >> 1
                if x & 1: xA ^= self.MATRIX_A
                mt[i] = mt[(i + self.MM) % self.NN] ^ xA
            self.mti = 0
        x = self.mt[self.mti]; self.mti += 1
        x ^= (x >> 29) & 0x5555555555555555
        x ^= (x << 17) & 0x71D67FFFEDA60000
        x ^= (x << 37) & 0xFFF7EEE000000000
        x ^= x >> 43
        return x & M64
r = MT64(5489)
for _ in range(9999): r.next()
assert r.next() == 9981545732273789042, "standard check failed"
def shuffle(n, seed):
    rng = MT64(seed); order = list(range(n))
    for i in range(n, 1, -1):
        limit = M64 - M64 % i
        x = rng.next()
        while x >= limit: x = rng.next()
        j = x % i
        order[i-1], order[j] = order[j], order[i-1]
    return order
print(''.join(map(str, shuffle(10, 42))))
