#!/usr/bin/env bash
# Configures and builds moecore: the CUDA preset when nvcc is available, else the CPU preset.
# Prints the build folder on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${MOE_PRESET:-}" ]; then
  if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then MOE_PRESET=cuda; else MOE_PRESET=cpu; fi
fi
jobs=$(nproc)
cmake --preset "$MOE_PRESET" >/dev/null
cmake --build "build/$MOE_PRESET" -j "$jobs" >&2
echo "build/$MOE_PRESET"
