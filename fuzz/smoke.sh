#!/usr/bin/env bash
# Fuzz smoke run (make fuzz-smoke): every fuzz target replays its seed corpus and its regression inputs, then
# fuzzes for FUZZ_SECONDS (default 25) into a scratch copy of the corpus; two targets at a time. Inputs that
# crash, hang or leak are kept in <bin dir>/../fuzz-findings/<target>/.
# Usage: fuzz/smoke.sh <bin dir> [seconds]. Run from the repository root. Exits non-zero on any finding.
set -euo pipefail
BIN=${1:?usage: fuzz/smoke.sh <bin dir> [seconds]}
SECONDS_PER_TARGET=${2:-25}
WORK=$(mktemp -d /tmp/angelslim-fuzz-smoke.XXXXXX)
FINDINGS=$(cd "$BIN/.." && pwd)/fuzz-findings
trap 'rm -rf "$WORK"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

one() {
  local bin=$1 name secs=$2
  name=$(basename "$bin"); name=${name#fuzz_}
  local log="$WORK/$name.log" dict
  dict="-dict=fuzz/dict/$(dict_of "$name").dict"
  mkdir -p "$WORK/$name/corpus" "$FINDINGS/$name"
  if [ -d "fuzz/regressions/$name" ] && [ -n "$(ls -A "fuzz/regressions/$name")" ]; then
    if ! "$bin" -runs=0 fuzz/regressions/"$name"/* >"$log" 2>&1; then
      echo "FAIL $name: a regression input fails again"; tail -40 "$log"; return 1
    fi
  fi
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $dict \
      -artifact_prefix="$FINDINGS/$name/" "$WORK/$name/corpus" "fuzz/corpus/$name" >"$log" 2>&1; then
    echo "FAIL $name"; tail -60 "$log"; echo "input kept in $FINDINGS/$name/"; return 1
  fi
  local runs
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "ok   $name: $runs executions in ${secs}s, corpus $(ls fuzz/corpus/$name | wc -l) seeds -> $(ls "$WORK/$name/corpus" | wc -l) new"
}
export -f one dict_of
export WORK FINDINGS

status=0
ls "$BIN"/fuzz_* >/dev/null 2>&1 || { echo "no fuzz targets in $BIN"; exit 1; }
ls "$BIN"/fuzz_* | xargs -P 2 -I{} bash -c 'one "$@"' _ {} "$SECONDS_PER_TARGET" || status=1
[ $status -eq 0 ] && echo "fuzz smoke: all targets clean" || echo "fuzz smoke: FAILED"
exit $status
