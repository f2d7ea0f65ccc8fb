// Round-to-nearest reference checkpoints (SPEC 4.2): the baseline every algorithm is measured against. Every
// decoder linear (`model.layers.*_proj.weight`) is replaced by its RTN dequantization on a SPEC 4.2 grid, stored as
// F32 so that the loader reads the exact dequantized values; every other tensor is copied unchanged.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "angelslim/quant/grid.h"

namespace angelslim {

// Writes the RTN checkpoint of the model in `src` to `out` (created; existing files are overwritten) with
// config.json and the `aux_files` present in `src` copied along. Returns the number of linears quantized.
int write_rtn_checkpoint(const std::filesystem::path& src, const std::filesystem::path& out, const GridSpec& spec,
                         const std::vector<std::string>& aux_files = {});

}  // namespace angelslim
