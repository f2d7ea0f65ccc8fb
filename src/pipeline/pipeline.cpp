// The quantization run (SPEC 4.1): config -> calibration set -> layer streaming -> export -> verify -> publish.
#include "angelslim/pipeline/pipeline.h"

#include "angelslim/pipeline/ocr.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <future>
#include <optional>
#include <span>
#include <set>
#include <string>

#include "angelslim/calib/backend.h"
#include "angelslim/calib/engine.h"
#include "angelslim/config/run_config.h"
#include "angelslim/core/error.h"
#include "angelslim/core/hash.h"
#include "angelslim/core/progress.h"
#include "angelslim/data/text_dataset.h"
#include "angelslim/export/output_dir.h"
#include "angelslim/export/verify.h"
#include "angelslim/io/safetensors.h"
#include "angelslim/model/weight_loader.h"
#include "angelslim/pipeline/nonfinite.h"
#include "angelslim/pipeline/resume.h"
#include "angelslim/quant/awq_quantizer.h"
#include "angelslim/quant/fp8_quantizer.h"
#include "angelslim/quant/gptq_quantizer.h"
#include "angelslim/quant/ignore_match.h"
#include "angelslim/text/chat_template.h"
#include "angelslim/text/tokenizer.h"

#if ANGELSLIM_HAVE_CUDA
namespace angelslim::cuda {
void warm_up(int device);  // backend/cuda_calib.h
}
#endif

namespace angelslim {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// GPTQ solves that run at once on the GPU: one solve's host work and transfers overlap another's kernels.
constexpr int kCudaGptqConcurrency = 4;

// ANGELSLIM_GPTQ_CONCURRENCY (1..64) overrides the number of GPTQ solves that run at once (default `fallback`).
int gptq_concurrency(int fallback) {
  const char* env = std::getenv("ANGELSLIM_GPTQ_CONCURRENCY");
  if (!env || !*env) return fallback;
  char* end = nullptr;
  const long v = std::strtol(env, &end, 10);
  ANGELSLIM_CHECK(end && *end == '\0' && v >= 1 && v <= 64, InvalidInput,
                  "ANGELSLIM_GPTQ_CONCURRENCY='{}': expected an integer in [1, 64]", env);
  return static_cast<int>(v);
}

// ANGELSLIM_DEFER_WRITES: unset = defer the layer writes where there are no resume checkpoints (--device cuda with
// calibration); 0 = never; 1 = always, the CPU's resume checkpoints left off (a test hook for the deferred path).
std::optional<bool> defer_writes_env() {
  const char* env = std::getenv("ANGELSLIM_DEFER_WRITES");
  if (!env || !*env) return std::nullopt;
  ANGELSLIM_CHECK(std::string(env) == "0" || std::string(env) == "1", InvalidInput,
                  "ANGELSLIM_DEFER_WRITES='{}': expected 0 or 1", env);
  return std::string(env) == "1";
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Full names of every Linear module of the model (quantizable or not), for ignore_layers validation.
std::vector<std::string> all_linear_modules(const ModelConfig& cfg) {
  std::vector<std::string> out{"lm_head"};
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    if (cfg.family == ModelFamily::kMoE) out.push_back("model.layers." + std::to_string(l) + ".mlp.gate.wg");
    for (const auto& id : layer_linear_ids(cfg, l)) out.push_back(id.full_name());
  }
  return out;
}

void check_family(const RunConfig& rc, const ModelConfig& cfg) {
  const ModelName want = cfg.family == ModelFamily::kDense ? ModelName::kHunyuanDense
                         : cfg.family == ModelFamily::kMoE ? ModelName::kHunyuanMoE
                                                           : ModelName::kHunyuanVL;
  if (rc.model.name != want)
    throw InvalidInput(fmt::format("{}: model.name: '{}' does not match the checkpoint ({} is a {} model; expected '{}')",
                                   rc.config_path.string(), yaml_name(rc.model.name), rc.model.model_path,
                                   family_name(cfg.family), yaml_name(want)));
}

void reject_quantized_input(const ModelConfig& cfg, const TensorStore& store) {
  if (cfg.raw.contains("quantization_config"))
    throw InvalidInput(fmt::format("{}: config.json has a quantization_config: the input is already quantized",
                                   store.dir().string()));
  for (const auto& [name, t] : store.all())
    if (t->dtype != DType::kBF16 && t->dtype != DType::kF16 && t->dtype != DType::kF32)
      throw InvalidInput(fmt::format("{}: tensor '{}' has dtype {}; inputs must be BF16, F16 or F32",
                                     store.dir().string(), name, dtype_name(t->dtype)));
}

void copy_tensor(const TensorView& t, SafetensorsWriter& w) {
  w.add(t.name, t.dtype, t.shape, std::span<const uint8_t>(t.data, t.nbytes));
}

// The writes of layer `l`'s tensors in source order: quantized modules from the quantizer (deferred, see
// LayerQuantizer::take_module), everything else as in the source (the store is read-only while the pipeline runs).
std::vector<std::function<void(SafetensorsWriter&)>> layer_writes(int64_t l, const TensorStore& store,
                                                                  LayerQuantizer& q) {
  std::vector<std::function<void(SafetensorsWriter&)>> writes;
  const std::string prefix = "model.layers." + std::to_string(l) + ".";
  for (auto it = store.all().lower_bound(prefix); it != store.all().end() && it->first.rfind(prefix, 0) == 0; ++it) {
    const std::string& name = it->first;
    const TensorView* t = it->second;
    const std::string suffix = ".weight";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const std::string module = name.substr(0, name.size() - suffix.size());
      if (q.has_output(module)) {
        writes.push_back(q.take_module(module));
        continue;
      }
    }
    if (const auto* mod = q.modified_tensor(name)) {
      writes.push_back([name, t, mod](SafetensorsWriter& w) { w.add(name, t->dtype, t->shape, *mod); });
      continue;
    }
    writes.push_back([t](SafetensorsWriter& w) { copy_tensor(*t, w); });
  }
  return writes;
}

// GPTQ's Cholesky retry ladder (SPEC 4.4.3): a raised damping is logged, an RTN fallback becomes a warning.
void log_gptq_fallbacks(int64_t l, const RunConfig& rc, json& rep) {
  for (const auto& lin : rep["linears"]) {
    if (!lin.is_object()) continue;
    const std::string method = lin.value("method", std::string());
    const std::string name = fmt::format("model.layers.{}.{}", l, lin.value("name", std::string("?")));
    if (method == "cholesky_fallback") {
      rep["warnings"].push_back(fmt::format("{}: the Hessian has no Cholesky factor even with the largest damping; "
                                            "quantized round-to-nearest on the same grid (cholesky_fallback)",
                                            name));
    } else if (method == "gptq" && lin.contains("damp") && lin["damp"].is_number() &&
               lin["damp"].get<double>() > rc.quant.damp_percent * (1 + 1e-6)) {
      spdlog::info("{}: Cholesky failed at damp_percent {}; succeeded with {}", name, rc.quant.damp_percent,
                   lin["damp"].get<double>());
    }
  }
}

}  // namespace

int run_pipeline(const RunOptions& opt) {
  const auto t_start = Clock::now();
  json timing = json::object();
  CliOverrides ov;
  ov.model_path = opt.model_path;
  ov.save_path = opt.save_path;
  RunConfig rc = load_run_config(opt.config_path, ov);
  const bool on_gpu = opt.device == "cuda";
  ANGELSLIM_CHECK(on_gpu || opt.device == "cpu", InvalidInput, "--device {}: expected cpu or cuda", opt.device);
  ANGELSLIM_CHECK(!(on_gpu && rc.quant.algo == QuantAlgo::kAwq && rc.quant.gptq_rounding), Unsupported,
                  "{}: quant_method.weight_rounding: gptq with AWQ runs on the CPU only in this version (the GPU AWQ "
                  "path rounds to nearest); use --device cpu or weight_rounding: rtn",
                  rc.config_path.string());
  std::future<void> cuda_started;
  if (on_gpu) {
    require_cuda_device();  // one clear line (Unsupported) without a CUDA build or device
#if ANGELSLIM_HAVE_CUDA
    // The CUDA context and cuBLAS start while the checkpoint, tokenizer and calibration set load.
    if (const char* e = std::getenv("ANGELSLIM_CUDA_LEGACY"); !(e && std::string(e) == "1"))
      cuda_started = std::async(std::launch::async, [] { cuda::warm_up(0); });
#endif
  }
  for (const auto& w : rc.warnings) spdlog::warn("{}", w);
  json warnings = json::array();
  for (const auto& w : rc.warnings) warnings.push_back(w);

  const fs::path model_dir = rc.model.model_path;
  // The tokenizer and chat template (a calibration set needs them) load on a second thread meanwhile; a failure
  // surfaces where they are used.
  std::future<std::unique_ptr<Tokenizer>> tok_loading;
  std::future<ChatTemplate> tmpl_loading;
  if (rc.dataset) {
    tok_loading = std::async(std::launch::async, [model_dir] { return Tokenizer::load(model_dir); });
    tmpl_loading = std::async(std::launch::async, [model_dir] { return ChatTemplate::load(model_dir); });
  }
  const ModelConfig cfg = load_model_config(model_dir);
  check_family(rc, cfg);
  ANGELSLIM_CHECK(!(on_gpu && cfg.family == ModelFamily::kOcr), Unsupported,
                  "--device cuda: HunyuanOCR (hunyuan_vl) runs on the CPU only in this version; use --device cpu");
  TensorStore store(model_dir);
  reject_quantized_input(cfg, store);
  // NaN/Inf in the tensors outside the decoder layers (the layers' own are scanned as they are loaded).
  if (!opt.allow_nonfinite)
    for (const auto& [name, t] : store.all())
      if (name.rfind("model.layers.", 0) != 0) check_finite(*t);

  // ignore_layers against the model's modules (SPEC 2.7).
  const auto modules = all_linear_modules(cfg);
  const auto check = check_ignore_layers(rc.quant.ignore_layers, modules);
  if (!check.errors.empty()) {
    std::string msg = fmt::format("{}: compression.quantization.ignore_layers: {} problem(s):", rc.config_path.string(),
                                  check.errors.size());
    for (const auto& e : check.errors) msg += "\n" + e;
    throw InvalidInput(msg);
  }
  for (const auto& w : check.warnings) {
    spdlog::warn("{}", w);
    warnings.push_back(w);
  }

  std::unique_ptr<LayerQuantizer> quantizer;
  if (rc.quant.is_fp8()) {
    // The FP8 ignore list: every Linear that stays unquantized (SPEC 5.5), sorted and de-duplicated.
    IgnoreMatcher user(rc.quant.ignore_layers);
    std::set<std::string> ign{"lm_head"};
    for (const auto& m : modules)
      if (m.find(".mlp.gate.wg") != std::string::npos || user.matches(m)) ign.insert(m);
    if (cfg.family == ModelFamily::kOcr)
      for (auto& e : ocr_fp8_ignore(rc, cfg, store)) ign.insert(e);  // the vision tower (SPEC 5.5)
    quantizer = std::make_unique<Fp8Quantizer>(rc, cfg, std::vector<std::string>(ign.begin(), ign.end()));
  } else if (rc.quant.algo == QuantAlgo::kGptq) {
    quantizer = std::make_unique<GptqQuantizer>(rc, cfg);
  } else if (rc.quant.algo == QuantAlgo::kAwq) {
    quantizer = std::make_unique<AwqQuantizer>(rc, cfg);
  } else {
    throw Unsupported(fmt::format("{}: compression.quantization.name '{}' is not implemented in this build",
                                  rc.config_path.string(), rc.quant.name));
  }

  // OCR + FP8 + quant_vit: the ViT linears are quantized too (SPEC 4.3.6).
  std::unique_ptr<VitFp8Quantizer> vit_fp8;
  if (cfg.family == ModelFamily::kOcr && rc.quant.is_fp8() && rc.quant.quant_vit)
    vit_fp8 = std::make_unique<VitFp8Quantizer>(rc, cfg, store);
  OutputDir out(rc.output_dir(), opt.overwrite);
  // Resume (docs/reliability.md) needs the calibration state on the host: the CPU backend, or no calibration.
  const std::optional<bool> defer_env = defer_writes_env();
  const bool resumable = (!on_gpu || !quantizer->needs_calibration()) && defer_env != true;
  std::future<std::string> model_fp;
  if (resumable)
    model_fp = std::async(std::launch::async, [&] { return model_fingerprint(model_dir, store.files()); });
  spdlog::info("model {} ({}, {} layers) -> {}", model_dir.string(), family_name(cfg.family), cfg.n_layers,
               out.final_dir().string());
  // The next layer is read and converted on a second thread while this one is calibrated (host memory: two layers).
  // The source tensors of the layer are scanned for NaN/Inf on the way.
  auto load = [&](int64_t l) {
    if (!opt.allow_nonfinite) {
      const std::string prefix = "model.layers." + std::to_string(l) + ".";
      for (auto it = store.all().lower_bound(prefix); it != store.all().end() && it->first.rfind(prefix, 0) == 0; ++it)
        check_finite(*it->second);
    }
    return load_decoder_layer(store, cfg, l);
  };
  // Without resume the first layer is layer 0: it loads while the calibration set is prepared.
  std::future<DecoderLayer> first_load;
  if (!resumable && cfg.n_layers > 0) first_load = std::async(std::launch::async, load, int64_t{0});
  timing["load"] = since(t_start);

  // Calibration set.
  json calib_report = nullptr;
  std::unique_ptr<CalibBackend> acts;
  std::string data_fp;
  if (quantizer->needs_calibration()) {
    const auto t0 = Clock::now();
    if (!rc.dataset) throw InvalidInput(fmt::format("{}: dataset: required for {}", rc.config_path.string(), rc.quant.name));
    const bool multimodal = rc.dataset->kind == DatasetKind::kMultiModal;
    if (multimodal && cfg.family != ModelFamily::kOcr)
      throw Unsupported(fmt::format("{}: dataset.name: {} is not supported for this model", rc.config_path.string(),
                                    rc.dataset->name));
    const auto tok = tok_loading.valid() ? tok_loading.get() : Tokenizer::load(model_dir);
    const auto tmpl = tmpl_loading.valid() ? tmpl_loading.get() : ChatTemplate::load(model_dir);
    DatasetStats stats;
    std::optional<OcrCalibration> ocr;  // images through the vision tower (SPEC 4.1 step 3)
    if (multimodal) ocr = prepare_ocr_calibration(rc, cfg, store, vit_fp8.get());
    const auto samples =
        multimodal ? std::vector<CalibSample>{}
                   : load_text_dataset(rc.dataset->data_path, *tok, tmpl, rc.dataset->max_seq_length,
                                       rc.dataset->num_samples, rc.dataset->shuffle, rc.global.seed, &stats);
    if (samples.empty() && !ocr)
      throw InvalidInput(fmt::format("{}: no usable calibration sample", rc.dataset->data_path));
    std::vector<std::vector<int32_t>> ids = ocr ? ocr->ids : std::vector<std::vector<int32_t>>{};
    for (const auto& s : samples) ids.push_back(s.ids);
    if (resumable) data_fp = data_fingerprint(ids);
    if (resumable && ocr)  // the images too (same token ids, other pixels)
      data_fp = sha256_hex(data_fp + sha256_hex(std::string_view(reinterpret_cast<const char*>(ocr->image_embeds.data()),
                                                                 ocr->image_embeds.size() * sizeof(float))));
    if (on_gpu) {
      if (cuda_started.valid()) cuda_started.get();
      CudaCalibOptions co;
      co.batch_tokens = opt.cuda_batch_tokens;
      co.activation_budget_bytes = opt.cuda_activation_budget_bytes;
      if (!co.activation_budget_bytes)
        if (const char* env = std::getenv("ANGELSLIM_CUDA_ACT_BUDGET_BYTES"); env && *env) {
          char* end = nullptr;
          const long long v = std::strtoll(env, &end, 10);
          ANGELSLIM_CHECK(end && *end == '\0' && v >= 0, InvalidInput,
                          "ANGELSLIM_CUDA_ACT_BUDGET_BYTES='{}': expected a byte count >= 0", env);
          co.activation_budget_bytes = v;
        }
      acts = make_cuda_calib(cfg, store, ids, cfg.torch_dtype != "float32", co);
      std::string solver = opt.gptq_solver;
      if (solver == "auto")
        if (const char* env = std::getenv("ANGELSLIM_GPTQ_SOLVER"); env && *env) solver = env;
      ANGELSLIM_CHECK(solver == "auto" || solver == "cuda" || solver == "cpu", InvalidInput,
                      "GPTQ solver '{}': expected auto, cuda or cpu", solver);
      if (auto* gq = dynamic_cast<GptqQuantizer*>(quantizer.get()); gq && solver != "cpu") {
        const int n = gptq_concurrency(kCudaGptqConcurrency);
        // ANGELSLIM_GPTQ_DEVICE_HANDOFF=0: Hessians and W_hat go through the host as before (A/B runs, tests).
        const char* handoff = std::getenv("ANGELSLIM_GPTQ_DEVICE_HANDOFF");
        gq->set_solver(cuda_gptq_solver(*acts, n), "cuda", n, !(handoff && std::string(handoff) == "0"));
      }
    } else {
      auto host = std::make_unique<CalibActivations>(cfg, store, ids);
      if (ocr) host->set_multimodal(ocr->image_rows, ocr->image_embeds, std::move(ocr->xd_pos));
      acts = std::move(host);
      if (auto* gq = dynamic_cast<GptqQuantizer*>(quantizer.get()))
        if (const int n = gptq_concurrency(1); n > 1) gq->set_solver(cpu_gptq_solver(), "cpu", n);
    }
    calib_report = ocr ? ocr->report : stats.to_json();
    calib_report["chat_template_sha256"] = tmpl.sha256();
    if (static_cast<int64_t>(ids.size()) < rc.dataset->num_samples) {
      const auto w = fmt::format("{}: only {} usable samples (num_samples {})", rc.dataset->data_path, ids.size(),
                                 rc.dataset->num_samples);
      spdlog::warn("{}", w);
      warnings.push_back(w);
    }
    spdlog::info("calibration: {} samples, {} tokens ({})", acts->n_samples(), acts->n_tokens(), acts->device_name());
    timing["calibration_prep"] = since(t0);
  }

  // Resume state: fingerprints of this run, and the checkpoint of an interrupted one (docs/reliability.md).
  CalibActivations* host_acts = acts ? acts->host_activations() : nullptr;
  RunFingerprint fp;
  std::unique_ptr<Checkpoint> ckpt;
  std::optional<ResumeState> resumed;
  json resume_report = {{"enabled", resumable}, {"resumed_from_layer", nullptr}, {"discarded", nullptr}};
  if (resumable) {
    json cj = rc.to_json();
    cj["device"] = opt.device;
    cj["gptq_solver"] = opt.gptq_solver;
    cj["version"] = ANGELSLIM_VERSION;
    fp.config = sha256_hex(cj.dump());
    fp.model = model_fp.get();
    fp.data = data_fp;
    ckpt = std::make_unique<Checkpoint>(Checkpoint::folder_for(out.final_dir()));
    if (!opt.resume) {
      if (ckpt->has_state()) spdlog::info("--no-resume: discarding the checkpoint in {}", ckpt->dir().string());
      ckpt->clear();
    } else {
      std::string why;
      resumed = ckpt->load(fp, &why);
      if (resumed && (resumed->layers_done < 0 || resumed->layers_done > cfg.n_layers ||
                      (host_acts == nullptr) != resumed->activations.empty())) {
        resumed.reset();
        why = "its layer count or activations do not fit this run";
      }
      if (!why.empty()) {
        const auto w = fmt::format("{}: not resuming, {}; starting over", ckpt->dir().string(), why);
        spdlog::warn("{}", w);
        warnings.push_back(w);
        resume_report["discarded"] = why;
        ckpt->clear();
      }
    }
  } else if (opt.resume) {
    spdlog::info("resume: not available with --device cuda and calibration in this version (no checkpoints)");
  }

  // Layer streaming.
  const auto t_layers = Clock::now();
  SafetensorsWriter writer(out.tmp());
  if (ckpt) writer.set_data_dir(ckpt->dir());
  {
    // Room for the header in front of the data (no copy of the shards at the end without checkpoints): at most 4
    // output tensors (GPTQ: qweight, qzeros, scales, g_idx) per source tensor, each entry within its name plus 112
    // characters. Set with and without checkpoints alike, so both give the same bytes.
    std::size_t longest = 0;
    for (const auto& [name, t] : store.all()) longest = std::max(longest, name.size());
    writer.reserve_header(
        std::min<uint64_t>(uint64_t{16} << 20, (4 * store.all().size() * (longest + 112) + 4095) / 4096 * 4096));
  }
  json layers = json::array();
  json layer_warnings = json::array();  // warnings of the completed layers (kept in the checkpoint)
  int64_t first_layer = 0;
  const bool fresh = !resumed;
  if (resumed) {
    writer.restore(resumed->writer);
    if (host_acts) host_acts->restore_activations(std::move(resumed->activations));
    layers = std::move(resumed->layers);
    layer_warnings = std::move(resumed->warnings);
    for (const auto& w : layer_warnings) warnings.push_back(w);
    first_layer = resumed->layers_done;
    resume_report["resumed_from_layer"] = first_layer;
    spdlog::info("resume: continuing at layer {} of {} ({} done; checkpoint {})", first_layer, cfg.n_layers,
                 first_layer, ckpt->dir().string());
    resumed.reset();
  }
  const bool defer_writes = quantizer->deferred_writes() && !ckpt && defer_env != false;
  // Deferred writes: layer l's tensors are packed and written on a second thread while layer l + 1 is quantized
  // (not with checkpoints, which save the writer's state after each layer). `writing` returns that write's seconds;
  // the embedding goes first, the same way, while layer 0 is quantized.
  std::future<double> writing;
  // A write job: its tensors, then their bytes handed to the disk's writeback (the disk works while the next layers
  // run; finish() waits for less). Returns its seconds.
  auto write_job = [&writer](std::vector<std::function<void(SafetensorsWriter&)>> writes) {
    return [&writer, writes = std::move(writes)] {
      const auto t = Clock::now();
      for (const auto& w : writes) w(writer);
      writer.start_writeback();
      return since(t);
    };
  };
  if (fresh) {
    auto write_embedding = write_job(
        {[&store](SafetensorsWriter& w) { copy_tensor(store.get("model.embed_tokens.weight"), w); }});
    if (defer_writes)
      writing = std::async(std::launch::async, std::move(write_embedding));
    else
      (void)write_embedding();
  }
  std::vector<int64_t> sample_offsets;
  if (host_acts)
    for (int64_t s = 0; s <= host_acts->n_samples(); ++s) sample_offsets.push_back(host_acts->sample_begin(s));
  Progress bar("quantize", cfg.n_layers - first_layer, "layer");
  std::future<DecoderLayer> next = std::move(first_load);
  if (!next.valid() && first_layer < cfg.n_layers) next = std::async(std::launch::async, load, first_layer);
  auto finish_write = [&] {  // waits for the previous write; its seconds go to that layer's report
    if (!writing.valid()) return;
    const double s = writing.get();
    if (!layers.empty()) layers.back()["write_s"] = s;
  };
  for (int64_t l = first_layer; l < cfg.n_layers; ++l) {
    const auto t0 = Clock::now();
    DecoderLayer layer = next.get();
    const double wait_s = since(t0);
    if (l + 1 < cfg.n_layers) next = std::async(std::launch::async, load, l + 1);
    json rep = {{"index", l}, {"linears", json::array()}, {"warnings", json::array()}};
    rep["load_wait_s"] = wait_s;  // waiting for this layer's read and conversion (overlapped with the last layer)
    quantizer->quantize_layer_with(layer, acts.get(), rep);
    log_gptq_fallbacks(l, rc, rep);
    if (host_acts && !opt.allow_nonfinite)
      check_finite_activations(host_acts->x(), cfg.d_model, sample_offsets, l);
    auto write_all = write_job(layer_writes(l, store, *quantizer));
    if (defer_writes) {
      const auto tw = Clock::now();
      finish_write();
      rep["write_wait_s"] = since(tw);  // waiting for the previous layer's write (overlapped with this layer)
      writing = std::async(std::launch::async, std::move(write_all));
    } else {
      rep["write_s"] = write_all();
    }
    rep["seconds"] = since(t0);
    for (const auto& w : rep["warnings"]) {
      spdlog::warn("{}", w.get<std::string>());
      warnings.push_back(w);
      layer_warnings.push_back(w);
    }
    rep.erase("warnings");
    layers.push_back(std::move(rep));
    if (ckpt)
      ckpt->save(fp, l + 1, writer, layers, layer_warnings,
                 host_acts ? std::span<const float>(host_acts->x()) : std::span<const float>());
    bar.advance(1, fmt::format("layer {}", l));
  }
  bar.finish();
  json backend = acts ? acts->report() : json(nullptr);
  acts.reset();
  timing["layers"] = since(t_layers);
  const auto t_last_write = Clock::now();
  finish_write();  // the last layer's write (after the layers' time: no layer overlaps it)
  if (defer_writes) timing["last_layer_write"] = since(t_last_write);

  // Non-layer tensors after the layers (final norm; lm_head only when untied).
  const auto t_write = Clock::now();
  std::set<std::string> vit_replaced;  // quant_vit: ViT linears written as FP8
  json vit_report = nullptr;
  if (vit_fp8) vit_replaced = vit_fp8->write(store, writer, vit_report);
  for (const auto& [name, t] : store.all()) {
    if (name.rfind("model.layers.", 0) == 0 || name == "model.embed_tokens.weight") continue;
    if (vit_replaced.count(name)) continue;
    if (name == "lm_head.weight" && cfg.tie_word_embeddings) continue;
    copy_tensor(*t, writer);
  }
  const auto files = writer.finish();

  ordered_json config = ordered_json::parse(read_file(model_dir / "config.json"));
  if (auto qc = quantizer->quantization_config(); qc.is_null())
    config.erase("quantization_config");
  else
    config["quantization_config"] = std::move(qc);
  quantizer->edit_config(config);
  ocr_edit_quant_config(cfg, config);  // vision tower entries (SPEC 5.3.1, 5.4)
  write_file_atomic(out.tmp() / "config.json", config.dump(2) + "\n");
  copy_aux_files(model_dir, out.tmp());
  timing["write"] = since(t_write);

  // Shard fingerprints, one thread per shard (a 7B output has several GB), computed while the output is read back
  // and checked against SPEC 5 before publishing it.
  const auto t_verify = Clock::now();
  std::vector<std::future<std::string>> digests;
  for (const auto& f : files)
    digests.push_back(std::async(std::launch::async, [p = out.tmp() / f] { return sha256_file(p); }));
  verify_output(out.tmp(), cfg, rc);
  json outputs = json::array();
  for (std::size_t i = 0; i < files.size(); ++i)
    outputs.push_back(
        {{"file", files[i]}, {"bytes", fs::file_size(out.tmp() / files[i])}, {"sha256", digests[i].get()}});
  timing["verify"] = since(t_verify);  // reading the output back against SPEC 5, and the shards' SHA-256
  timing["total"] = since(t_start);
  int64_t params = 0;
  for (const auto& [name, t] : store.all()) params += t->numel();
  json report = {
      {"tool", {{"name", "angelslim-cpp"}, {"version", ANGELSLIM_VERSION}}},
      {"created_utc", utc_now()},
      {"config", rc.to_json()},
      {"config_sha256", sha256_file(rc.config_path)},
      {"model",
       {{"family", family_name(cfg.family)},
        {"model_type", cfg.model_type},
        {"layers", cfg.n_layers},
        {"params", params},
        {"dtype", cfg.torch_dtype}}},
      {"calibration", calib_report},
      {"algorithm", {{"name", rc.quant.name}, {"bits", rc.quant.bits}}},
      {"layers", layers},
      {"device", opt.device},
      {"backend", backend},
      {"peak_gpu_bytes",
       backend.is_object() && backend.contains("peak_gpu_bytes") ? backend["peak_gpu_bytes"] : json(0)},
      {"timing_s", timing},
      {"outputs", outputs},
      {"warnings", warnings},
      {"resume", resume_report},
  };
  if (!vit_report.is_null()) report["vit_linears"] = vit_report;  // quant_vit (SPEC 4.3.6)
  write_file_atomic(out.tmp() / "quant_report.json", report.dump(2) + "\n");
  out.commit();
  if (ckpt) ckpt->remove();
  spdlog::info("wrote {} ({} shard(s), {:.1f} MB) in {:.2f}s", out.final_dir().string(), files.size(),
               static_cast<double>(writer.total_bytes()) / 1e6, since(t_start));
  return 0;
}

}  // namespace angelslim
