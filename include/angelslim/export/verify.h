// Write-time validation (SPEC 5.6): re-opens a finished output directory and checks every quantized
// module's tensors (presence, dtype, shape, finite positive scales) and the fused-module scale rules.
#pragma once
#include <filesystem>

#include "angelslim/config/run_config.h"
#include "angelslim/model/model_config.h"

namespace angelslim {

// Throws Internal describing the first violation (an output that fails this is a bug, not bad input).
void verify_output(const std::filesystem::path& dir, const ModelConfig& source_cfg, const RunConfig& rc);

}  // namespace angelslim
