#!/usr/bin/env bash
# Packs a CUDA build made on a CPU machine so that a GPU machine without Debian's packages can run
# it: the programs, stripped, and the shared libraries they resolve from the system folders that
# the GPU machine may lack (OpenBLAS, yaml-cpp, libpng, PCRE2, utf8proc, ...), xz-compressed.
# Left out: libc and libstdc++ (the GPU machine has newer ones), the CUDA libraries, NCCL and cuDNN
# (its own), and MPI (its Open MPI is ABI-compatible, and must match its mpirun).
#   scripts/gpu-pack.sh BUILD OUT.tar.xz
# Unpack on the GPU machine with `tar xJf OUT.tar.xz`; it restores BUILD's programs and BUILD/deps,
# which scripts/gpu-suite.sh puts on LD_LIBRARY_PATH.
set -euo pipefail
build=$1 out=$2
programs=("$build/moe" "$build/tests/moe_gpu_tests" "$build/tests/moe_cpu_tests")
for extra in moe_mpi_tests moe_mpi_training_tests moe_nccl_tests; do
  [ -x "$build/tests/$extra" ] && programs+=("$build/tests/$extra")
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$build/tests" "$stage/$build/deps"
for p in "${programs[@]}"; do
  cp "$p" "$stage/$p"
  strip "$stage/$p"
done
ldd "${programs[@]}" | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libstdc++*|libgcc_s*|ld-linux*|libpthread*|libdl*|librt*) ;;
    libcuda*|libcublas*|libcudart*|libnvrtc*|libnccl*|libcudnn*|libnvJitLink*) ;;
    libmpi*|libopen-*|libpmix*|libhwloc*|libevent*|libucx*|libuc[pst]*|libfabric*|libpsm*) ;;
    *) cp -L "$lib" "$stage/$build/deps/" ;;
  esac
done
# CUPTI (moe train --profile's device recorder) is loaded with dlopen, so ldd does not list it:
# the toolkit's own, of the CUDA version the build was made with.
for cupti in /usr/local/cuda/lib64/libcupti.so.[0-9]* /usr/local/cuda/extras/CUPTI/lib64/libcupti.so.[0-9]*; do
  [ -f "$cupti" ] && { cp -L "$cupti" "$stage/$build/deps/"; break; }
done
strip --strip-unneeded "$stage/$build/deps/"* 2>/dev/null || true
tar -C "$stage" -cJf "$out" "$build"
echo "$out: $(du -h "$out" | cut -f1)"
