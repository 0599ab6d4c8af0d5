#!/usr/bin/env bash
# The main job: install, build, and run `moe train` with no arguments (the default run: a tiny
# MoE trained on the built-in corpus, then a checkpoint and a text sample), on the GPU
# when there is one, else on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=$(scripts/build.sh | tail -n 1)
exec "$build/moe" train "$@"
