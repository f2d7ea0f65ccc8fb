#!/usr/bin/env bash
# GPU end-to-end benchmark (issue 6): a random-weight Hunyuan-0.5B-shaped checkpoint (angelslim synth), then
# fp8_static, int4_gptq and int4_awq (AWQ_MSE=1: with the clip search) with --device cuda on 128 samples of up to
# 2048 tokens of the bundled ShareGPT file; wall time from process start to output written (median of REPS), real
# calibration tokens, peak GPU memory.
# Optional: BENCH_7B=1 adds int4_gptq on the 7B shape (one run; BENCH_7B_ONLY=1 runs only that), each step of it
# limited to BENCH_7B_TIMEOUT seconds (default 300); BENCH_7B_LAYERS=N synthesizes N of its 32 layers (the report's
# per-layer time extrapolates to 32). BENCH_A13B=N (N layers, e.g. 2) adds an A13B-shaped checkpoint
# with N decoder layers: fp8_static and int4_gptq once each, per-layer seconds and peak GPU memory from the report,
# extrapolated to the 32 layers of the real model (BENCH_A13B_ONLY=1 runs only that; BENCH_A13B_TIMEOUT per step,
# default 400). BENCH_05B=0 skips the 0.5B runs; ALGOS (default "fp8_static int4_gptq int4_awq") selects them.
# LOG_LEVEL (default warn) is passed to every run (info shows ANGELSLIM_GPTQ_PROFILE=1 lines).
# Runs in one device call:
#   BIN=/path/to/angelslim bench/e2e/gpu_bench.sh  ->  prints a table; JSON lines in $OUT/gpu_bench.jsonl if OUT set.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-build/bin/angelslim}
REPS=${REPS:-3}
WORK=${WORK:-/tmp/gpu-bench}
DEVICE=${DEVICE:-cuda}
SAMPLES=${SAMPLES:-128}
SEQ=${SEQ:-2048}
DATA=$PWD/tests/data/calib/sharegpt_gpt4_256.jsonl
mkdir -p "$WORK"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1);" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(date -u +%F)"

LIMIT=()  # a command prefix: timeout for the 7B steps
synth() {  # synth PRESET TOKENIZER_DIR [LAYERS] -> $WORK/PRESET (or $WORK/PRESET-LLAYERS)
  local t0 t1 dir=$WORK/$1 extra=()
  if [ -n "${3:-}" ]; then dir=$WORK/$1-L$3; extra=(--layers "$3"); fi
  if [ ! -f "$dir/config.json" ]; then
    t0=$(date +%s.%N)
    "${LIMIT[@]}" "$BIN" -q synth --preset "$1" "${extra[@]}" --tokenizer "$2" --out "$dir" --overwrite >/dev/null
    t1=$(date +%s.%N)
    echo "synth $1 ${3:+($3 layers)}: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
  fi
}

config() {  # config NAME MODEL ALGO [MODEL_NAME] -> path
  local f="$WORK/$1.yaml" quant
  if [ "$3" = int4_awq ]; then
    quant="    name: int4_awq
    bits: 4
    quant_method:
      weight: \"per-group\"
      group_size: 128
      zero_point: true
      mse_range: $([ "${AWQ_MSE:-0}" = 1 ] && echo true || echo false)"
  elif [ "$3" = fp8_static ]; then
    quant='    name: fp8_static
    bits: 8
    quant_method:
      weight: "per-tensor"
      activation: "per-tensor"'
  else
    quant='    name: int4_gptq
    bits: 4
    quant_method:
      weight: "per-group"
      group_size: 128'
  fi
  cat >"$f" <<EOF
global:
  save_path: $WORK/out
model:
  name: ${4:-HunyuanDense}
  model_path: $2
compression:
  name: PTQ
  quantization:
$quant
    ignore_layers:
      - "lm_head"
dataset:
  name: TextDataset
  data_path: $DATA
  max_seq_length: $SEQ
  num_samples: $SAMPLES
EOF
  echo "$f"
}

bench() {  # bench LABEL MODEL ALGO REPS [MODEL_NAME]
  local cfg times=() t0 t1 rep
  cfg=$(config "$1" "$2" "$3" "${5:-}")
  for rep in $(seq "$4"); do
    t0=$(date +%s.%N)
    "${LIMIT[@]}" "$BIN" -q -c "$cfg" --device "$DEVICE" --overwrite --log-level "${LOG_LEVEL:-warn}"
    t1=$(date +%s.%N)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")
  done
  local rep_json="$WORK/out/$1/quant_report.json" med
  med=$(printf '%s\n' "${times[@]}" | median)
  python3 - "$rep_json" "$1" "$3" "$med" "${times[*]}" <<'PY'
import json, sys, os
r = json.load(open(sys.argv[1]))
cal, t, b = r.get("calibration") or {}, r["timing_s"], r.get("backend") or {}
act = b.get("activations", {})
line = {"run": sys.argv[2], "algo": sys.argv[3], "median_s": float(sys.argv[4]), "runs_s": [float(x) for x in sys.argv[5].split()],
        "device": r.get("device"), "gpu": b.get("gpu"), "samples": cal.get("samples_kept"), "tokens": cal.get("tokens_total"),
        "tokens_per_sample": {"min": cal.get("min_len"), "max": cal.get("max_len"),
                              "mean": (cal.get("tokens_total") or 0) / max(1, cal.get("samples_kept") or 1)},
        "truncated_samples": cal.get("truncated"), "peak_gpu_bytes": r.get("peak_gpu_bytes"),
        "spilled_batches": act.get("spilled_batches"), "timing_s": t, "weights": b.get("weights"),
        "layers": r["model"]["layers"], "layer_s": [l.get("seconds") for l in r.get("layers", [])]}
ls = [x for x in line["layer_s"] if x is not None]
if len(ls) > 1:
    ls = ls[1:]  # the first layer carries the one-time warm-up (cuBLAS, allocations)
if ls:
    per = sorted(ls)[len(ls) // 2]
    line["layer_s_median"] = per
    # The real model's time: the fixed part (everything but the layers) plus 32 layers at the median layer time.
    line["extrapolated_32_layers_s"] = t["total"] - t.get("layers", 0) + 32 * per
    line["peak_gpu_gb"] = (r.get("peak_gpu_bytes") or 0) / 1e9
print("[gpu-bench] " + json.dumps(line))
out = os.environ.get("OUT")
if out:
    with open(os.path.join(out, "gpu_bench.jsonl"), "a") as f: f.write(json.dumps(line) + "\n")
    with open(os.path.join(out, f"report_{sys.argv[2]}.json"), "w") as f: json.dump(r, f, indent=1)
PY
  echo "$1 ($3, --device $DEVICE): median $med s over $4 runs [${times[*]}] (process start to output written)"
}

if [ "${BENCH_7B_ONLY:-0}" != 1 ] && [ "${BENCH_A13B_ONLY:-0}" != 1 ] && [ "${BENCH_05B:-1}" = 1 ]; then
  synth hunyuan-0.5b "$PWD/tests/data/fixtures/hy-dense-tiny"
  for algo in ${ALGOS:-fp8_static int4_gptq int4_awq}; do
    bench "hy05b_$algo" "$WORK/hunyuan-0.5b" "$algo" "$REPS"
  done
fi
if [ "${BENCH_7B:-0}" = 1 ] || [ "${BENCH_7B_ONLY:-0}" = 1 ]; then
  LIMIT=(timeout "${BENCH_7B_TIMEOUT:-300}")
  if [ -n "${BENCH_7B_LAYERS:-}" ]; then
    synth hunyuan-7b "$PWD/tests/data/tokenizers/hy-a13b" "$BENCH_7B_LAYERS"
    bench "hy7b_L${BENCH_7B_LAYERS}_int4_gptq" "$WORK/hunyuan-7b-L$BENCH_7B_LAYERS" int4_gptq 1
  else
    synth hunyuan-7b "$PWD/tests/data/tokenizers/hy-a13b"
    bench hy7b_int4_gptq "$WORK/hunyuan-7b" int4_gptq 1
  fi
  LIMIT=()
fi
if [ -n "${BENCH_A13B:-}" ] && [ "${BENCH_A13B:-0}" != 0 ]; then
  LIMIT=(timeout "${BENCH_A13B_TIMEOUT:-400}")
  synth hunyuan-a13b "$PWD/tests/data/tokenizers/hy-a13b" "$BENCH_A13B"
  for algo in ${A13B_ALGOS:-fp8_static int4_gptq}; do
    bench "a13b_L${BENCH_A13B}_$algo" "$WORK/hunyuan-a13b-L$BENCH_A13B" "$algo" 1 HunyuanMoE
  done
  LIMIT=()
fi
