// Round-to-nearest reference checkpoints (SPEC 4.2).
#include "angelslim/quant/rtn_reference.h"

#include <span>

#include "angelslim/io/safetensors.h"

namespace angelslim {

namespace fs = std::filesystem;

int write_rtn_checkpoint(const fs::path& src, const fs::path& out, const GridSpec& spec,
                         const std::vector<std::string>& aux_files) {
  fs::create_directories(out);
  fs::copy_file(src / "config.json", out / "config.json", fs::copy_options::overwrite_existing);
  for (const auto& f : aux_files)
    if (fs::exists(src / f)) fs::copy_file(src / f, out / f, fs::copy_options::overwrite_existing);
  TensorStore st(src);
  SafetensorsWriter w(out);
  int n = 0;
  for (const auto& [name, t] : st.all()) {
    const bool lin = name.rfind("model.layers.", 0) == 0 && name.size() > 12 &&
                     name.compare(name.size() - 12, 12, "_proj.weight") == 0;
    if (!lin) {
      w.add(name, t->dtype, t->shape, std::span<const uint8_t>(t->data, t->nbytes));
      continue;
    }
    const auto q = rtn_quantize(t->to_f32(), static_cast<int>(t->shape[0]), static_cast<int>(t->shape[1]), spec);
    w.add_f32(name, t->shape, q.dequant);
    ++n;
  }
  w.finish();
  return n;
}

}  // namespace angelslim
