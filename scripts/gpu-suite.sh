#!/usr/bin/env bash
# Runs the GPU test binaries and the MoE-layer benchmark from a build folder on a GPU machine,
# logging to LOGDIR. Usable with a build made elsewhere: libraries the build machine had and
# this one may lack (OpenBLAS and its Fortran runtime) are looked up in BUILD/deps first.
#   scripts/gpu-suite.sh BUILD LOGDIR [tests|bench|all] [extra bench args...]
set -uo pipefail
build=$1 logdir=$2 what=${3:-all}
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$logdir"
export LD_LIBRARY_PATH="$build/deps:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logdir/gpu.txt"
status=0
if [ "$what" = tests ] || [ "$what" = all ]; then
  "$build/tests/moe_gpu_tests" 2>&1 | tee "$logdir/gpu_tests.log" | grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests ran" || true
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  "$build/moe" bench moe-layer "$@" 2>&1 | tee "$logdir/bench_moe_layer.log" || status=1
fi
exit $status
