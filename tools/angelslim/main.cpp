// angelslim command line: quantize (-c CONFIG), eval, generate, inspect. Only this file catches errors:
// it prints one line and exits 2 for bad input, 1 for internal errors.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "angelslim/core/error.h"
#include "angelslim/core/progress.h"
#include "angelslim/eval/generate.h"
#include "angelslim/eval/generate_ocr.h"
#include "angelslim/eval/perplexity.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/hunyuan.h"
#include "angelslim/model/synth.h"
#include "angelslim/model/weight_loader.h"
#include "angelslim/ops/cpu_ops.h"
#include "angelslim/pipeline/pipeline.h"
#include "angelslim/text/tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace angelslim {
namespace {

int cmd_eval(const fs::path& model_dir, const std::string& baseline_dir, const std::string& text_file,
             const std::string& ids_file, int64_t seq_len, int64_t windows, bool as_json, bool bf16) {
  std::vector<int32_t> ids;
  if (!ids_file.empty()) {
    ids = read_ids_file(ids_file);
  } else {
    auto tok = Tokenizer::load(model_dir);
    ids = tok->encode(read_file(text_file));
  }
  ForwardOptions opt;
  opt.round_bf16 = bf16;
  auto run = [&](const fs::path& dir) {
    HunyuanModel model(dir, opt);
    const auto r = perplexity(model, ids, seq_len, windows, !as_json);
    json j = {{"ppl", r.ppl},         {"mean_nll", r.mean_nll},   {"tokens", r.tokens},
              {"windows", r.windows}, {"seq_len", r.seq_len},     {"seconds", r.seconds},
              {"tokens_per_second", r.tokens_per_second}, {"model", dir.string()},
              {"format", WeightFormat::from_config(model.config()).describe()}, {"precision", bf16 ? "bf16" : "fp32"}};
    return j;
  };
  json j = run(model_dir);
  if (!baseline_dir.empty()) {
    const json b = run(baseline_dir);
    j["baseline"] = b;
    j["delta_percent"] = (j["ppl"].get<double>() / b["ppl"].get<double>() - 1.0) * 100.0;
  }
  if (as_json) {
    std::cout << j.dump() << std::endl;
    return 0;
  }
  auto line = [](const json& r) {
    return fmt::format("{:<34} perplexity {:.4f} over {} tokens ({} windows of {}), {:.0f} tok/s",
                       r["format"].get<std::string>(), r["ppl"].get<double>(), r["tokens"].get<int64_t>(),
                       r["windows"].get<int64_t>(), r["seq_len"].get<int64_t>(), r["tokens_per_second"].get<double>());
  };
  if (j.contains("baseline")) std::cout << "baseline " << line(j["baseline"]) << "\n";
  std::cout << (j.contains("baseline") ? "model    " : "") << line(j) << "\n";
  if (j.contains("baseline")) std::cout << fmt::format("change   {:+.3f}%\n", j["delta_percent"].get<double>());
  return 0;
}

int cmd_inspect(const fs::path& dir) {
  const auto cfg = load_model_config(dir);
  TensorStore store(dir);
  std::map<std::string, int64_t> by_dtype;
  int64_t params = 0;
  for (const auto& [name, t] : store.all()) {
    by_dtype[std::string(dtype_name(t->dtype))] += 1;
    params += t->numel();
  }
  const auto fmt_ = WeightFormat::from_config(cfg);
  std::cout << fmt::format("model        {}\n", dir.string());
  std::cout << fmt::format("architecture {} ({}, family {})\n", cfg.architecture, cfg.model_type,
                           family_name(cfg.family));
  std::cout << fmt::format("dimensions   layers {}, hidden {}, intermediate {}, heads {}/{} (kv), head_dim {}, vocab {}\n",
                           cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                           cfg.vocab_size);
  if (cfg.family == ModelFamily::kMoE)
    std::cout << fmt::format("moe          experts {}, top-k {}, expert width {}, shared experts {}\n", cfg.n_experts,
                             cfg.moe_topk.at(0), cfg.moe_d_ff.at(0), cfg.n_shared_experts.at(0));
  std::cout << fmt::format("rope         {} theta {} alpha {} (base {:.1f})\n", cfg.rope_kind, cfg.rope_theta,
                           cfg.rope_alpha, cfg.rope_base());
  std::cout << fmt::format("tensors      {} in {} file(s)\n", store.all().size(), store.files().size());
  std::string dts;
  for (const auto& [k, v] : by_dtype) dts += fmt::format("{}{} x{}", dts.empty() ? "" : ", ", k, v);
  std::cout << fmt::format("dtypes       {}\n", dts);
  std::cout << fmt::format("elements     {} ({:.2f}M)\n", params, static_cast<double>(params) / 1e6);
  std::cout << fmt::format("quantization {}\n", fmt_.describe());
  if (cfg.raw.contains("quantization_config"))
    std::cout << "quantization_config " << cfg.raw["quantization_config"].dump() << "\n";
  return 0;
}

}  // namespace
}  // namespace angelslim

int main(int argc, char** argv) {
  using namespace angelslim;
  cpu::ensure_fast_blas(argv);
  // The forward pass allocates per-sample buffers of 0.1-30 MB. Above glibc's default 128 KiB threshold each
  // would be a fresh mmap: page faults and zeroing were 30% of a calibration run. Keep them on the heap.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  CLI::App app{"AngelSlim C++: post-training quantization of Hunyuan checkpoints (FP8, GPTQ, AWQ)"};
  app.set_version_flag("--version", std::string(ANGELSLIM_VERSION));
  std::string config, model_path, save_path, device = "cpu", log_level = "info";
  int threads = 0;
  bool overwrite = false, quiet = false, no_resume = false, allow_nonfinite = false;
  app.add_option("-c,--config", config, "AngelSlim YAML config: run the quantization it describes");
  app.add_option("--model-path", model_path, "override model.model_path");
  app.add_option("--save-path", save_path, "override global.save_path");
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--threads", threads, "worker threads (0 = all cores)");
  app.add_flag("--overwrite", overwrite, "replace an existing non-empty output directory");
  app.add_flag("--no-resume", no_resume, "start over even if a resumable state exists");
  app.add_flag("--allow-nonfinite", allow_nonfinite, "do not fail on NaN/Inf in the source weights or activations");
  app.add_flag("-q,--quiet", quiet, "no progress bars");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));

  app.fallthrough();  // subcommands created below inherit it: global flags may follow the subcommand
  auto* eval = app.add_subcommand("eval", "perplexity over consecutive windows of a text or ids file");
  std::string e_model, e_base, e_text, e_ids;
  int64_t e_seq = 512, e_windows = 0;
  bool e_json = false, e_bf16 = false;
  eval->add_option("--model", e_model, "checkpoint directory (bf16 or a quantized output)")->required();
  eval->add_option("--baseline", e_base, "also evaluate this checkpoint and print the relative change");
  auto* o_text = eval->add_option("--text", e_text, "UTF-8 text file (tokenized with the model's tokenizer)");
  auto* o_ids = eval->add_option("--ids", e_ids, "int32 little-endian token ids");
  o_text->excludes(o_ids);
  eval->add_option("--seq-len", e_seq, "window length in tokens");
  eval->add_option("--windows", e_windows, "number of windows (default: all full windows)");
  eval->add_flag("--json", e_json, "print one JSON object");
  eval->add_flag("--bf16", e_bf16, "round at the BF16 storage points (default: fp32 reference mode)");

  auto* gen = app.add_subcommand("generate", "greedy generation with a KV cache, streamed");
  std::string g_model, g_prompt;
  bool g_chat = false;
  int64_t g_max = 64;
  gen->add_option("--model", g_model, "checkpoint directory")->required();
  gen->add_option("--prompt", g_prompt, "prompt text")->required();
  gen->add_flag("--chat", g_chat, "render the prompt as a user turn with the model's chat template");
  gen->add_option("--max-new-tokens", g_max, "maximum tokens to generate");
  std::string g_image;
  gen->add_option("--image", g_image, "HunyuanOCR: a PNG/JPEG image for the prompt (OCR models always use the chat "
                                      "template)");

  auto* syn = app.add_subcommand("synth", "write a random-weight checkpoint with the real shapes of a preset");
  SynthOptions so;
  syn->add_option("--preset", so.preset, "model shape")->required()->check(CLI::IsMember(synth_presets()));
  syn->add_option("--layers", so.layers, "number of decoder layers (default: the preset's)");
  syn->add_option("--tokenizer", so.tokenizer_dir, "copy the tokenizer files of this directory");
  syn->add_option("--out", so.out, "output directory")->required();
  syn->add_option("--seed", so.seed, "random seed");
  syn->add_flag("--overwrite", so.overwrite, "replace a non-empty output directory");

  auto* insp = app.add_subcommand("inspect", "describe a checkpoint directory");
  std::string i_dir;
  insp->add_option("dir", i_dir, "checkpoint directory")->required();

  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%^%l%$: %v");
  Progress::set_quiet(quiet);
  try {
    cpu::set_num_threads(threads);
    if (*eval) {
      if (e_text.empty() && e_ids.empty()) throw InvalidInput("eval: give --text FILE or --ids FILE");
      return cmd_eval(e_model, e_base, e_text, e_ids, e_seq, e_windows, e_json, e_bf16);
    }
    if (*gen) {
      if (!g_image.empty() || load_model_config(g_model).family == ModelFamily::kOcr) {
        generate_ocr(g_model, g_prompt, g_image, g_max, &std::cout);
        return 0;
      }
      return generate_greedy(g_model, g_prompt, g_chat, g_max, std::cout);
    }
    if (*insp) return cmd_inspect(i_dir);
    if (*syn) {
      so.threads = threads;
      so.progress = !quiet;
      synth_checkpoint(so);
      std::cout << "wrote " << so.out.string() << "\n";
      return 0;
    }
    if (!config.empty()) {
      RunOptions ro;
      ro.config_path = config;
      if (!model_path.empty()) ro.model_path = model_path;
      if (!save_path.empty()) ro.save_path = save_path;
      ro.device = device;
      ro.overwrite = overwrite;
      ro.resume = !no_resume;
      ro.allow_nonfinite = allow_nonfinite;
      const int rc = run_pipeline(ro);
      // The output is committed and every file of it closed: end without the process teardown (static objects, the
      // CUDA driver's context), a noticeable part of a short GPU run.
      std::cout.flush();
      spdlog::shutdown();
      std::fflush(nullptr);
      std::_Exit(rc);
    }
    std::cerr << app.help();
    return 2;
  } catch (const angelslim::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 1;
  }
}
