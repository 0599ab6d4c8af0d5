# Sourced by the GPU machine scripts (gpu-dist-suite.sh, gpu-scale.sh) after they set `build` and
# `logdir`: the unpacked build's libraries on the path, NVLink multicast off (it must stay off on
# these machines), mpirun as root, the GPU count and model logged, and step(), which runs one
# command with its log in LOGDIR and keeps `status` non-zero once a step failed.
# shellcheck shell=bash disable=SC2154,SC2034  # build and logdir come in, the rest goes out
export LD_LIBRARY_PATH="$build/deps:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun_flags=(--allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none)
gpus=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logdir/gpu.txt"
status=0
step() {  # step NAME COMMAND...: runs, logs to LOGDIR/NAME.log, prints the outcome
  local name=$1
  shift
  local start=$SECONDS
  "$@" >"$logdir/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc ($((SECONDS - start)) s)"
  [ $rc -eq 0 ] || { status=1; tail -n 30 "$logdir/$name.log"; }
}
