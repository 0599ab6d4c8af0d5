#!/usr/bin/env python3
"""Cross-checks moecore's safetensors code against the Python library (pip install safetensors numpy).

1. Python writes python.safetensors (every dtype moe holds, a 0-d and an empty tensor,
   metadata {"format": "pt"}).
2. The C++ test SafetensorsPython.* reads it, checks every byte, and writes the same tensors as
   moecore.safetensors and as shards of at most 40 bytes in sharded/.
3. Here: moecore.safetensors must be byte-identical to python.safetensors; Python must read
   both our single file and our shards (through the index) back to the same bytes.
4. .npy: numpy writes python.npy (float32 [2, 3, 5]); the C++ test NpyPython.* reads it and
   writes moecore.npy with the same values, which must load in numpy to the same array and be
   byte-identical to numpy's file (numpy >= 1.22 pads the header the same way).

Usage: python3 tests/io/check_with_python.py [path/to/moe_cpu_tests]
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import safetensors
from safetensors import safe_open

# Keep in step with python_spec() in tests/io/safetensors_test.cpp.
SPEC = [
    ("model.embed.weight", "bfloat16", "BF16", [4, 3], 2),
    ("layers.0.w", "float32", "F32", [2, 3], 4),
    ("layers.0.b", "float32", "F32", [3], 4),
    ("scale", "float64", "F64", [], 8),
    ("empty", "float16", "F16", [0, 5], 2),
    ("ids", "int64", "I64", [4], 8),
    ("counts", "int32", "I32", [2, 2], 4),
    ("mask", "uint8", "U8", [5], 1),
    ("q.e4m3", "float8_e4m3fn", "F8_E4M3", [3, 3], 1),
    ("q.e5m2", "float8_e5m2", "F8_E5M2", [7], 1),
    ("h", "float16", "F16", [3], 2),
]
NUMPY = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
         "int64": np.int64, "int32": np.int32, "uint8": np.uint8}


def tensor_bytes(i, shape, size):
    """Byte k of tensor i is (37 i + 11 k + 5) mod 256, whatever the dtype."""
    n = size * int(np.prod(shape, dtype=np.int64))
    return np.array([(37 * i + 11 * k + 5) % 256 for k in range(n)], dtype=np.uint8)


def check_file(path, expected, names):
    """Python reads `path`: raw bytes of every tensor, and numpy values where numpy has the dtype."""
    with open(path, "rb") as f:
        entries = dict(safetensors.deserialize(f.read()))
    with safe_open(path, framework="numpy") as f:
        for name in names:
            _, torch_name, st_name, shape, _ = SPEC[[s[0] for s in SPEC].index(name)]
            entry = entries[name]
            assert entry["dtype"] == st_name, (path, name, entry["dtype"])
            assert list(entry["shape"]) == shape, (path, name, entry["shape"])
            assert bytes(entry["data"]) == expected[name].tobytes(), (path, name, "bytes differ")
            if torch_name in NUMPY:
                got = f.get_tensor(name)
                want = expected[name].view(NUMPY[torch_name]).reshape(shape)
                assert got.shape == tuple(shape) and got.tobytes() == want.tobytes(), (path, name)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "build/cpu/tests/moe_cpu_tests"
    with tempfile.TemporaryDirectory(prefix="moe_st_py_") as folder:
        expected, specs = {}, {}
        for i, (name, torch_name, _, shape, size) in enumerate(SPEC):
            expected[name] = tensor_bytes(i, shape, size)
            specs[name] = safetensors.TensorSpec(dtype=torch_name, shape=shape,
                                                 data_ptr=expected[name].ctypes.data,
                                                 data_len=expected[name].nbytes)
        python_file = os.path.join(folder, "python.safetensors")
        safetensors.serialize_file(specs, python_file, metadata={"format": "pt"})

        env = dict(os.environ, MOE_SAFETENSORS_PY_DIR=folder)
        run = subprocess.run([binary, "--gtest_filter=SafetensorsPython.*"], env=env,
                             capture_output=True, text=True)
        print(run.stdout[-2000:], run.stderr[-2000:])
        assert run.returncode == 0 and "[  PASSED  ] 1 test" in run.stdout, "C++ side failed"

        ours = os.path.join(folder, "moecore.safetensors")
        with open(python_file, "rb") as a, open(ours, "rb") as b:
            py_bytes, our_bytes = a.read(), b.read()
        assert py_bytes == our_bytes, "moecore.safetensors differs from python.safetensors"
        check_file(ours, expected, [s[0] for s in SPEC])

        sharded = os.path.join(folder, "sharded")
        with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
            index = json.load(f)
        assert index["metadata"]["total_size"] == sum(e.nbytes for e in expected.values())
        assert sorted(index["weight_map"]) == sorted(expected)
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 1, shards
        for shard in shards:
            names = [n for n, s in index["weight_map"].items() if s == shard]
            check_file(os.path.join(sharded, shard), expected, names)
        print(f"OK: byte-identical to safetensors {safetensors.__version__}; "
              f"{len(shards)} shards read back by Python")


def check_npy(binary):
    with tempfile.TemporaryDirectory(prefix="moe_npy_py_") as folder:
        values = (np.arange(30, dtype=np.float32) * 0.25 - 3).reshape(2, 3, 5)
        python_file = os.path.join(folder, "python.npy")
        np.save(python_file, values)
        env = dict(os.environ, MOE_NPY_PY_DIR=folder)
        run = subprocess.run([binary, "--gtest_filter=NpyPython.*"], env=env,
                             capture_output=True, text=True)
        print(run.stdout[-2000:], run.stderr[-2000:])
        assert run.returncode == 0 and "[  PASSED  ] 1 test" in run.stdout, "C++ npy side failed"
        ours = os.path.join(folder, "moecore.npy")
        loaded = np.load(ours)
        assert loaded.dtype == np.float32 and loaded.shape == (2, 3, 5), (loaded.dtype, loaded.shape)
        assert np.array_equal(loaded, values), "moecore.npy values differ"
        with open(python_file, "rb") as a, open(ours, "rb") as b:
            same = a.read() == b.read()
        if hasattr(np.lib.format, "GROWTH_AXIS_MAX_DIGITS"):
            assert same, "moecore.npy differs from numpy's bytes"
        print(f"OK: .npy read by numpy {np.__version__}" + (", byte-identical" if same else ""))


if __name__ == "__main__":
    main()
    check_npy(sys.argv[1] if len(sys.argv) > 1 else "build/cpu/tests/moe_cpu_tests")
