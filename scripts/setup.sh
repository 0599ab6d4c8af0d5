#!/usr/bin/env bash
# Installs what moecore needs to build, from Debian's packages, when it is missing.
# The CUDA toolkit (nvcc, cuBLASLt, NCCL, cuDNN) is used when present under /usr/local/cuda.
set -euo pipefail
packages=(cmake ninja-build g++ libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev
          nlohmann-json3-dev libcli11-dev libyaml-cpp-dev pkg-config
          libpng-dev             # `moe plot`'s PNG charts
          libpcre2-dev libutf8proc-dev  # Hugging Face BPE tokenizers: regexes, NFC
          libsentencepiece-dev  # SentencePiece tokenizer.model files (Llama-2, Mixtral)
          libopenmpi-dev openmpi-bin     # the MPI backend and its multi-process tests (mpirun)
          fortunes)  # fortunes: the text of `moe train`'s default run (data/builtin_corpus.h)
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

# The cuDNN frontend (header-only C++ graph API for cuDNN's fused attention) comes from PyPI;
# CMake finds its headers through python3. Headers only: --no-deps skips its Python stack.
# Pinned: the version attention_cudnn.cpp was written against.
if ! python3 -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['purelib'], 'include', 'cudnn_frontend.h')))" 2>/dev/null; then
  echo "setup: installing nvidia-cudnn-frontend (pip)"
  python3 -m pip install -q --no-deps --disable-pip-version-check nvidia-cudnn-frontend==1.32.0 >/dev/null 2>&1 \
    || echo "setup: pip install nvidia-cudnn-frontend failed: attention will use its native kernels"
fi

# CUTLASS's headers (the `cutlass` grouped GEMM backend: ops/grouped_gemm_cutlass.h) come from
# PyPI too: the nvidia-cutlass wheel carries them under cutlass_library/source/include, where
# CMake finds them through python3. Headers only: --no-deps skips its Python stack. Pinned: the
# version the backend was written against.
if ! python3 -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['purelib'], 'cutlass_library', 'source', 'include', 'cutlass', 'cutlass.h')))" 2>/dev/null; then
  echo "setup: installing nvidia-cutlass (pip, headers)"
  python3 -m pip install -q --no-deps --disable-pip-version-check nvidia-cutlass==4.2.0.0 >/dev/null 2>&1 \
    || echo "setup: pip install nvidia-cutlass failed: the cutlass grouped GEMM backend will be absent"
fi
