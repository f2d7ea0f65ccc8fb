#!/usr/bin/env bash
# CPU benchmarks on the bundled tiny model: eval throughput (tokens/s at seq-len 512) and end-to-end
# quantization wall time of the example configs. Prints medians of REPS runs; append them to bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-build/bin/angelslim}
REPS=${REPS:-5}
MODEL=tests/data/fixtures/hy-dense-tiny
IDS=tests/data/eval/heldout.hy-tiny.ids.bin
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
jget() { grep -o "\"$1\":[0-9.eE+-]*" | head -1 | cut -d: -f2; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(date -u +%F)"
for threads in 1 2; do
  tps=$(for i in $(seq "$REPS"); do "$BIN" eval --model "$MODEL" --ids "$IDS" --windows 8 --seq-len 512 --json \
        --threads "$threads" | jget tokens_per_second; done | median)
  echo "eval hy-dense-tiny seq 512, 8 windows, $threads thread(s): median $tps tok/s over $REPS runs"
done
for cfg in ${CONFIGS:-configs/examples/hy_dense_tiny_fp8_static.yaml configs/examples/hy_dense_tiny_int4_gptq.yaml}; do
  [ -f "$cfg" ] || continue
  t=$(for i in $(seq "$REPS"); do s=$(date +%s.%N); "$BIN" -q -c "$cfg" --save-path /tmp/as-bench --overwrite \
       --log-level warn; e=$(date +%s.%N); awk -v a="$s" -v b="$e" "BEGIN{print b-a}"; done | median)
  echo "quantize $(basename "$cfg" .yaml): median $t s over $REPS runs (process start to output written)"
done
