#!/usr/bin/env bash
# `--device cuda` end to end on the lent GPU machine (a sibling of cuda_device_check.sh, which covers the ops and
# the layer): the GPU tests (tests/gpu, CPU-vs-GPU pipeline parity included) and bench/e2e/gpu_bench.sh, in one call.
#   here:  scripts/cuda_e2e_check.sh pack [BUILD_DIR [DIR]]  (default build-gpu, .devcarry: git-ignored; PACK_BINS
#          picks the binaries, PACK_FALLBACK=0 leaves out the libstdc++/libgcc_s fallback, and a DIR without lib/
#          takes the libraries of .devcarry)
#   there: run with carry [".devcarry"]:  bash .devcarry/cuda_e2e_check.sh run [STEPS]
#          STEPS: comma list of tests,bench,prof (default tests,bench); GTEST_FILTER (default 'Cuda*'), REPS, BENCH_7B,
#          BENCH_7B_ONLY, BENCH_7B_TIMEOUT, ALGOS, BENCH_05B pass on; TESTS_LOG / BENCH_LOG name the logs (several runs
#          in one call); BIN_DIR=.devcarry-X takes the binaries packed there instead (a second build in the same call:
#          `scripts/cuda_e2e_check.sh pack BUILD_DIR .devcarry-X` here, carry both).
#          prof: one run of each of PROF_ALGOS (default "fp8_static int4_gptq") on the 0.5B shape under nsys (when
#          installed): kernel / API / memcpy summaries in $OUT/prof_<algo>.txt (BENCH_7B_ONLY=1 BENCH_7B=1
#          BENCH_7B_LAYERS=N: the 7B shape instead).
#          -> $OUT/gpu_tests.log, $OUT/gpu_bench.log, $OUT/gpu_bench.jsonl, $OUT/report_*.json
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=${1:-}

unxz_to() {  # unxz_to FILE.xz DEST: xz if present, else Python's lzma
  if command -v xz >/dev/null 2>&1; then xz -dc "$1" >"$2"; else
    python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi
}

if [ "$mode" = pack ]; then
  build=${2:-$root/build-gpu}
  out=$root/${3:-.devcarry}
  rm -rf "$out"
  mkdir -p "$out/bin" "$out/lib/fallback"
  # Stripped copies (the carry is limited to the working tree's 64 MiB).
  tmpbin=$(mktemp)
  for b in ${PACK_BINS:-angelslim angelslim_tests}; do
    strip -o "$tmpbin" "$build/bin/$b" && xz -6 -T2 -c "$tmpbin" >"$out/bin/$b.xz"
  done
  rm -f "$tmpbin"
  # Non-system shared libraries (fmt, OpenBLAS, ...); libstdc++/libgcc_s only as a fallback for an older system.
  for lib in $(ldd "$build/bin/angelslim" "$build/bin/angelslim_tests" | awk '/=> \// {print $3}' | sort -u); do
    base=$(basename "$lib")
    case "$base" in
      libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libcuda.so* | libcudart.so* | \
        libcublas.so* | libcublasLt.so* | libcusolver.so* | libcusparse.so* | libnvJitLink.so*) ;;
      libstdc++.so* | libgcc_s.so*) [ "${PACK_FALLBACK:-1}" = 0 ] || xz -6 -c "$lib" >"$out/lib/fallback/$base.xz" ;;
      *) xz -6 -c "$lib" >"$out/lib/$base.xz" ;;
    esac
  done
  cp "${BASH_SOURCE[0]}" "$out/cuda_e2e_check.sh"
  echo "$root" >"$out/src_dir"  # the binaries carry this checkout's absolute path (ANGELSLIM_TEST_DATA)
  du -sh "$out"
  exit 0
fi

if [ "$mode" != run ]; then
  echo "usage: $0 pack [BUILD_DIR] | run [tests,bench]" >&2
  exit 2
fi

# ---- on the GPU machine; the script sits in <repo>/.devcarry
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
carry=$repo/.devcarry
steps=${2:-tests,bench}
OUT=${OUT:-/tmp/out}
export OUT
bins=$carry
if [ -n "${BIN_DIR:-}" ]; then bins=$repo/$BIN_DIR; fi
mkdir -p "$OUT"
if [ "$(cat /tmp/devbin/.from 2>/dev/null)" != "$bins" ]; then  # unpacked once per call and binary set
  rm -rf /tmp/devbin
  mkdir -p /tmp/devbin/lib /tmp/devbin/fallback
  for f in "$bins"/bin/*.xz; do
    unxz_to "$f" "/tmp/devbin/$(basename "$f" .xz)"
    chmod +x "/tmp/devbin/$(basename "$f" .xz)"
  done
  libs=$bins/lib
  [ -e "$libs" ] || libs=$carry/lib
  for f in "$libs"/*.xz; do unxz_to "$f" "/tmp/devbin/lib/$(basename "$f" .xz)"; done
  for f in "$libs"/fallback/*.xz; do [ -e "$f" ] && unxz_to "$f" "/tmp/devbin/fallback/$(basename "$f" .xz)"; done
  echo "$bins" >/tmp/devbin/.from
fi
for f in "$repo"/tests/data/fixtures/*/model-*.safetensors.xz; do
  [ -e "${f%.xz}" ] || unxz_to "$f" "${f%.xz}"
done
src=$(cat "$carry/src_dir")
if [ "$src" != "$repo" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$repo" "$src"; fi
cublas=$(ldconfig -p | awk '/libcublas\.so\.13 / {print $NF; exit}')
[ -n "$cublas" ] || cublas=$(find /usr/local/cuda*/ /usr/lib /opt -name 'libcublas.so.13' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=/tmp/devbin/lib:${cublas:+$(dirname "$cublas"):}${LD_LIBRARY_PATH:-}
if ! /tmp/devbin/angelslim --version >/dev/null 2>&1; then export LD_LIBRARY_PATH=/tmp/devbin/fallback:$LD_LIBRARY_PATH; fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv
echo "cublas: ${cublas:-not found}; nproc $(nproc)"

set +e
if [[ ",$steps," == *",tests,"* ]]; then
  tlog=$OUT/${TESTS_LOG:-gpu_tests.log}
  ( cd /tmp && /tmp/devbin/angelslim_tests --gtest_filter="${GTEST_FILTER:-Cuda*}" ) >"$tlog" 2>&1
  echo "gpu_tests rc=$?"
  grep -E '^\[gpu-e2e\]|FAILED|PASSED|SKIPPED \]|tests ran|Failure|Expected|Which is|error' "$tlog" |
    cut -c1-400 | head -150
fi
if [[ ",$steps," == *",bench,"* ]]; then
  blog=$OUT/${BENCH_LOG:-gpu_bench.log}
  BIN=/tmp/devbin/angelslim bash "$repo/bench/e2e/gpu_bench.sh" >"$blog" 2>&1
  echo "gpu_bench rc=$?"
  cut -c1-1500 "$blog"
fi
if [[ ",$steps," == *",prof,"* ]]; then
  nsys_bin=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  for algo in ${PROF_ALGOS:-fp8_static int4_gptq}; do
    bin=/tmp/devbin/angelslim
    if [ -n "$nsys_bin" ]; then
      mkdir -p /tmp/prof && rm -f /tmp/prof/run_*
      printf '#!/usr/bin/env bash\nexec "%s" profile -q -t cuda,osrt --sample=none --cpuctxsw=none -o /tmp/prof/run_$$ --force-overwrite true /tmp/devbin/angelslim "$@"\n' \
        "$nsys_bin" >/tmp/devbin/angelslim_nsys
      chmod +x /tmp/devbin/angelslim_nsys
      bin=/tmp/devbin/angelslim_nsys
    fi
    mkdir -p "$OUT/prof"
    OUT=$OUT/prof BIN=$bin REPS=1 ALGOS=$algo bash "$repo/bench/e2e/gpu_bench.sh" >"$OUT/prof_bench_$algo.log" 2>&1
    echo "prof $algo rc=$?"; grep -v '^\[gpu-bench\]' "$OUT/prof_bench_$algo.log" | tail -3
    rep=$(ls -S /tmp/prof/run_*.nsys-rep 2>/dev/null | head -1)  # the largest: the quantize run, not synth
    if [ -n "$nsys_bin" ] && [ -n "$rep" ]; then
      "$nsys_bin" stats -q --format table -r cuda_gpu_kern_sum,cuda_api_sum,cuda_gpu_mem_time_sum,osrt_sum "$rep" 2>&1 |
        cut -c1-300 >"$OUT/prof_$algo.txt"
    fi
  done
  [ -n "$nsys_bin" ] || echo "prof: nsys not found (timing from the reports only)"
fi
