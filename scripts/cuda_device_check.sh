#!/usr/bin/env bash
# Runs the CUDA backend's GPU tests (tests/gpu) and the decoder-layer benchmark on the lent GPU machine, which has
# none of the project's libraries: binaries are built here and travel, xz-compressed with their shared libraries.
#   here:  scripts/cuda_device_check.sh pack [TEST_BIN [BENCH_BIN]]
#          (defaults build/bin/angelslim_tests, build/bin/angelslim_cuda_bench) -> .devcarry/ (git-ignored)
#   there: run with carry [".devcarry"]:  bash .devcarry/cuda_device_check.sh run
#          -> $OUT/gpu_tests.log, $OUT/bench.log, $OUT/memcheck.log, $OUT/racecheck.log
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=${1:-}

unxz_to() {  # unxz_to FILE.xz DEST: xz if present, else Python's lzma
  if command -v xz >/dev/null 2>&1; then xz -dc "$1" >"$2"; else
    python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi
}

if [ "$mode" = pack ]; then
  tests=${2:-$root/build/bin/angelslim_tests}
  bench=${3:-$root/build/bin/angelslim_cuda_bench}
  out=$root/.devcarry
  rm -rf "$out"
  mkdir -p "$out/bin" "$out/lib/fallback"
  xz -9 -c "$tests" >"$out/bin/gpu_tests.xz"
  xz -9 -c "$bench" >"$out/bin/cuda_bench.xz"
  # Non-system shared libraries (fmt, OpenBLAS, ...); libstdc++/libgcc_s only as a fallback for an older system.
  for lib in $(ldd "$tests" "$bench" | awk '/=> \// {print $3}' | sort -u); do
    base=$(basename "$lib")
    case "$base" in
      libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libcuda.so* | libcudart.so* | \
        libcublas.so* | libcublasLt.so* | libcusolver.so* | libcusparse.so* | libnvJitLink.so*) ;;
      libstdc++.so* | libgcc_s.so*) xz -9 -c "$lib" >"$out/lib/fallback/$base.xz" ;;
      *) xz -9 -c "$lib" >"$out/lib/$base.xz" ;;
    esac
  done
  cp "${BASH_SOURCE[0]}" "$out/cuda_device_check.sh"
  # The binaries carry this checkout's absolute path (ANGELSLIM_TEST_DATA, ANGELSLIM_SOURCE_DIR).
  echo "$root" >"$out/src_dir"
  du -sh "$out"
  exit 0
fi

if [ "$mode" != run ]; then
  echo "usage: $0 pack [TEST_BIN [BENCH_BIN]] | run" >&2
  exit 2
fi

# ---- on the GPU machine; the script sits in <repo>/.devcarry
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
carry=$repo/.devcarry
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/devbin/lib
for f in "$carry"/bin/*.xz; do unxz_to "$f" "/tmp/devbin/$(basename "$f" .xz)"; chmod +x "/tmp/devbin/$(basename "$f" .xz)"; done
for f in "$carry"/lib/*.xz; do unxz_to "$f" "/tmp/devbin/lib/$(basename "$f" .xz)"; done
mkdir -p /tmp/devbin/fallback
for f in "$carry"/lib/fallback/*.xz; do [ -e "$f" ] && unxz_to "$f" "/tmp/devbin/fallback/$(basename "$f" .xz)"; done
# Fixture checkpoints travel xz-compressed (CMake unpacks them at configure time, which does not run here).
for f in "$repo"/tests/data/fixtures/*/model-*.safetensors.xz; do
  [ -e "${f%.xz}" ] || unxz_to "$f" "${f%.xz}"
done
src=$(cat "$carry/src_dir")
if [ "$src" != "$repo" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$repo" "$src"; fi
cublas=$(ldconfig -p | awk '/libcublas\.so\.13 / {print $NF; exit}')
[ -n "$cublas" ] || cublas=$(find /usr/local/cuda*/ /usr/lib /opt -name 'libcublas.so.13' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=/tmp/devbin/lib:${cublas:+$(dirname "$cublas"):}${LD_LIBRARY_PATH:-}
if ! /tmp/devbin/gpu_tests --gtest_list_tests >/dev/null 2>&1; then
  export LD_LIBRARY_PATH=/tmp/devbin/fallback:$LD_LIBRARY_PATH
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
echo "cublas: ${cublas:-not found}; nproc $(nproc)"

set +e
( cd /tmp && /tmp/devbin/gpu_tests --gtest_filter='Cuda*' ) >"$OUT/gpu_tests.log" 2>&1
echo "gpu_tests rc=$?"
grep -E '^\[gpu-parity\]|FAILED|PASSED|SKIPPED \]|tests ran|Failure|Expected|Which is' "$OUT/gpu_tests.log" | cut -c1-170 | head -400
/tmp/devbin/cuda_bench "${@:2}" >"$OUT/bench.log" 2>&1
echo "bench rc=$?"
/tmp/devbin/cuda_bench --tokens 8192 --cpu-reps 1 --gpu-reps 10 >>"$OUT/bench.log" 2>&1
echo "bench 8192 rc=$?"
cat "$OUT/bench.log"
if command -v compute-sanitizer >/dev/null 2>&1; then
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 /tmp/devbin/gpu_tests \
    --gtest_filter='CudaOps_*:CudaLayer.Moe*:-*LongSequence*:*hessian*' >"$OUT/memcheck.log" 2>&1
  echo "memcheck rc=$? (0 clean, 9 errors, 124 timeout)"
  grep -E 'ERROR SUMMARY|Invalid|PASSED|FAILED' "$OUT/memcheck.log" | head -20
  timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 /tmp/devbin/gpu_tests \
    --gtest_filter='CudaOps_attention.MatchesCpuOnBoundaryShapes:CudaOps_moe_expert_lists*:CudaOps_rms_norm*' \
    >"$OUT/racecheck.log" 2>&1
  echo "racecheck rc=$? (0 clean, 9 hazards, 124 timeout)"
  grep -E 'RACECHECK SUMMARY|hazard|PASSED|FAILED' "$OUT/racecheck.log" | head -20
fi
