#!/usr/bin/env bash
# The whole test suite: install, build, run the `cpu` tests, and the `gpu` tests when a GPU is
# present (they need one; CI has none).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=$(scripts/build.sh | tail -n 1)
labels="cpu"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then labels="cpu|gpu"; fi
ctest --test-dir "$build" -L "$labels" --output-on-failure -j "$(nproc)"
# Interoperability: our safetensors files against the reference Python library (from PyPI).
python3 -m pip install --quiet --disable-pip-version-check safetensors numpy
python3 tests/io/check_with_python.py "$build/tests/moe_cpu_tests"
