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
python3 -m pip install --quiet --disable-pip-version-check safetensors numpy tokenizers==0.23.3 sentencepiece==0.1.99  # tokenizers: the version the fixtures were made with; sentencepiece: the release nearest Debian's libsentencepiece 0.1.97 (0.2 breaks ties of unigram segmentations differently)
python3 tests/io/check_with_python.py "$build/tests/moe_cpu_tests"
# Megatron's indexed dataset (.bin/.idx) against an independent numpy reader and writer.
python3 tests/data/check_indexed_with_python.py "$build/tests/moe_cpu_tests"
# Megatron's GPT dataset indices (document / sample / shuffle / blending) against numpy's
# RandomState and an independent implementation of Megatron's algorithms.
python3 tests/data/check_gpt_dataset_with_python.py "$build/tests/moe_cpu_tests"
# Hugging Face BPE tokenizers (GPT-2, Llama-3, Qwen styles; Llama-2 / Mixtral's SentencePiece
# kind) against pip's tokenizers, tokenizer.model files against pip's sentencepiece, a few MB.
python3 tests/data/check_tokenizers_with_python.py "$build/tests/moe_cpu_tests"
