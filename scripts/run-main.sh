#!/usr/bin/env bash
# The main job: install, build, and run `moe` with no arguments (its default job), on the GPU
# when there is one, else on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=$(scripts/build.sh | tail -n 1)
exec "$build/moe" "$@"
