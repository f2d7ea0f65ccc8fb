#!/usr/bin/env bash
# Long fuzz run (the issue's 10-minute runs on a many-core machine): every target in <bin dir> fuzzes for
# <seconds> in WORKERS processes sharing the corpus <corpus root>/<name> (grown in place; seeded from
# fuzz/corpus/<name> when empty). A process that finds something leaves the input under <out>/artifacts/<name>/ and
# is restarted for the remaining time. Writes <out>/logs/<name>.<worker>.log and <out>/summary.tsv
# (target, executions, wall seconds, findings). Run from the repository root. $FUZZ_LAUNCHER, when set, prefixes
# every fuzzer command (e.g. a shipped ld.so with --library-path for a machine without the libraries).
set -uo pipefail
BIN=${1:?usage: fuzz/long_run.sh <bin dir> <seconds> <corpus root> <out dir> [workers]}
SECS=${2:?}
CORPUS=${3:?}
OUT=${4:?}
WORKERS=${5:-2}
mkdir -p "$OUT/logs" "$OUT/artifacts"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

worker() {
  local bin=$1 name=$2 w=$3 log="$OUT/logs/$2.$3.log" end=$((SECONDS + SECS)) left
  while left=$((end - SECONDS)); [ "$left" -gt 3 ]; do
    ${FUZZ_LAUNCHER:-} "$bin" -max_total_time="$left" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -dict="fuzz/dict/$(dict_of "$name").dict" -artifact_prefix="$OUT/artifacts/$name/" \
      "$CORPUS/$name" >>"$log" 2>&1 || echo "=== worker $w: finding, restarting" >>"$log"
  done
}

start=$SECONDS
for bin in "$BIN"/fuzz_*; do
  name=$(basename "$bin"); name=${name#fuzz_}
  mkdir -p "$CORPUS/$name" "$OUT/artifacts/$name"
  [ -n "$(ls -A "$CORPUS/$name")" ] || cp fuzz/corpus/"$name"/* "$CORPUS/$name/"
  for w in $(seq 1 "$WORKERS"); do worker "$bin" "$name" "$w" & done
done
wait
printf 'target\texecutions\twall_s\tfindings\tcorpus\n' >"$OUT/summary.tsv"
for bin in "$BIN"/fuzz_*; do
  name=$(basename "$bin"); name=${name#fuzz_}
  execs=$(cat "$OUT"/logs/"$name".*.log | grep -o 'stat::number_of_executed_units: [0-9]*' | awk '{s+=$2} END {print s+0}')
  finds=$(ls "$OUT/artifacts/$name" | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$execs" "$((SECONDS - start))" "$finds" "$(ls "$CORPUS/$name" | wc -l)" \
    >>"$OUT/summary.tsv"
done
cat "$OUT/summary.tsv"
