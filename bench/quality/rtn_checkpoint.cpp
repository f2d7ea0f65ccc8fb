// Round-to-nearest baseline checkpoints for the perplexity tables of bench/RESULTS.md (SPEC 4.2, 6.2): every
// decoder linear (`model.layers.*_proj.weight`) replaced by its RTN dequantization on one of the SPEC 4.2 grids,
// stored as F32 so that `angelslim eval` reads the exact dequantized values; every other tensor and config.json
// copied unchanged.
//   rtn_checkpoint SRC_DIR OUT_DIR GRID BITS GROUP
//   GRID: awq-asym (F16 scales, the SPEC 6.2 RTN row), awq-sym (F16), gptq-sym (BF16), gptq-asym (BF16)
// Built with the benchmarks: BUILD/bin/angelslim_rtn_checkpoint.
#include <cstdio>
#include <filesystem>
#include <string>

#include "angelslim/quant/rtn_reference.h"

using namespace angelslim;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s SRC_DIR OUT_DIR awq-asym|awq-sym|gptq-sym|gptq-asym BITS GROUP\n", argv[0]);
    return 2;
  }
  const fs::path src = argv[1], out = argv[2];
  const std::string grid = argv[3];
  GridSpec spec;
  spec.bits = std::stoi(argv[4]);
  spec.group_size = std::stoi(argv[5]);
  if (grid == "awq-asym") spec = {GridKind::kAwqAsym, spec.bits, spec.group_size, ScaleDType::kF16};
  else if (grid == "awq-sym") spec = {GridKind::kAwqSym, spec.bits, spec.group_size, ScaleDType::kF16};
  else if (grid == "gptq-sym") spec = {GridKind::kGptqSym, spec.bits, spec.group_size, ScaleDType::kBF16};
  else if (grid == "gptq-asym") spec = {GridKind::kGptqAsym, spec.bits, spec.group_size, ScaleDType::kBF16};
  else {
    std::fprintf(stderr, "unknown grid %s\n", grid.c_str());
    return 2;
  }
  const int n = write_rtn_checkpoint(src, out, spec);
  std::printf("%d linears quantized (%s, %d bits, group %d) -> %s\n", n, grid.c_str(), spec.bits, spec.group_size,
              out.c_str());
  return 0;
}
