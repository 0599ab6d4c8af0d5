#!/usr/bin/env bash
# Installs what moecore needs to build, from Debian's packages, when it is missing.
# The CUDA toolkit (nvcc, cuBLASLt, NCCL, cuDNN) is used when present under /usr/local/cuda.
set -euo pipefail
packages=(cmake ninja-build g++ libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev
          nlohmann-json3-dev libcli11-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
