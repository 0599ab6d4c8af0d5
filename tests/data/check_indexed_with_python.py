#!/usr/bin/env python3
"""Cross-checks moecore's Megatron indexed dataset (.bin/.idx) against an independent reader
and writer written here with numpy only, from the format's description (no Megatron import):

  PREFIX.idx: b"MMIDIDX\\x00\\x00", uint64 version 1, uint8 dtype code, uint64 sequence count S,
              uint64 document-index count D, int32[S] lengths, int64[S] byte pointers into the
              .bin, int64[D] document indices (0 .. S); all little-endian, packed.
  PREFIX.bin: the tokens of every sequence back to back in the dtype of the code
              (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16).

1. Python writes python_<name>.bin/.idx for every dtype (extreme values, empty sequences, an
   empty document), their spec.json, and input.jsonl.
2. The C++ test IndexedDatasetPython.* reads every python_<name> and checks it against the
   spec, writes the same sequences as moecore_<name>, and runs preprocess on input.jsonl
   (byte tokenizer, --append-eod, 3 workers) into moecore_corpus_text_document.
3. Here: moecore_<name> must be byte-identical to python_<name> and read back as the spec;
   moecore_corpus_text_document must hold every document's UTF-8 bytes followed by <eod> 256.

Usage: python3 tests/data/check_indexed_with_python.py [path/to/moe_cpu_tests]
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64,
          7: np.float32, 8: np.uint16}
EOD = 256  # the byte tokenizer's end-of-document id


def write_dataset(prefix, code, sequences, document_indices):
    dtype = np.dtype(DTYPES[code]).newbyteorder("<")
    pointers, offset = [], 0
    with open(prefix + ".bin", "wb") as f:
        for seq in sequences:
            data = np.array(seq, dtype=dtype)
            f.write(data.tobytes())
            pointers.append(offset)
            offset += data.nbytes
    with open(prefix + ".idx", "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<QBQQ", 1, code, len(sequences), len(document_indices)))
        f.write(np.array([len(s) for s in sequences], dtype="<i4").tobytes())
        f.write(np.array(pointers, dtype="<i8").tobytes())
        f.write(np.array(document_indices, dtype="<i8").tobytes())


def read_dataset(prefix):
    """Returns (code, list of numpy sequences, document indices), checking the layout."""
    with open(prefix + ".idx", "rb") as f:
        idx = f.read()
    assert idx[:9] == MAGIC, (prefix, "magic")
    version, code, count, doc_count = struct.unpack_from("<QBQQ", idx, 9)
    assert version == 1 and code in DTYPES, (prefix, version, code)
    offset = 34
    assert len(idx) == offset + 12 * count + 8 * doc_count, (prefix, "idx size")
    lengths = np.frombuffer(idx, dtype="<i4", count=count, offset=offset)
    pointers = np.frombuffer(idx, dtype="<i8", count=count, offset=offset + 4 * count)
    documents = np.frombuffer(idx, dtype="<i8", count=doc_count, offset=offset + 12 * count)
    assert documents[0] == 0 and documents[-1] == count and np.all(np.diff(documents) >= 0)
    dtype = np.dtype(DTYPES[code]).newbyteorder("<")
    expected_pointers = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))[:-1]]) \
        * dtype.itemsize if count else pointers
    assert np.array_equal(pointers, expected_pointers), (prefix, "pointers")
    with open(prefix + ".bin", "rb") as f:
        data = f.read()
    assert len(data) == int(lengths.sum()) * dtype.itemsize, (prefix, "bin size")
    sequences = [np.frombuffer(data, dtype=dtype, count=int(n), offset=int(p))
                 for n, p in zip(lengths, pointers)]
    return code, sequences, documents.tolist()


def dataset_specs():
    i64 = np.iinfo(np.int64)
    extremes = {1: (0, 255), 2: (-128, 127), 3: (-32768, 32767), 4: (-2**31, 2**31 - 1),
                5: (int(i64.min), int(i64.max)), 6: (-2**53, 2**53), 7: (-2**24, 2**24),
                8: (0, 65535)}
    specs = []
    for code, (low, high) in extremes.items():
        ramp = [(low + k * 7919) % (high - low + 1) + low if code != 5 else low + k
                for k in range(300)]
        sequences = [[], [low, high, 0, 1], ramp, [], [high], [5, low], []]
        specs.append({"name": np.dtype(DTYPES[code]).name, "dtype_code": code,
                      "sequences": sequences, "document_indices": [0, 2, 2, 3, 5, 7]})
    return specs


def corpus_texts():
    texts = [f"document {i} " + "abc" * (i % 11) for i in range(700)]
    texts[3] = ""
    texts[4] = "caf\u00e9 \u65e5\u672c \"quoted\"\nnewline\ttab \U0001F600"
    return texts


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "build/cpu/tests/moe_cpu_tests"
    with tempfile.TemporaryDirectory(prefix="moe_indexed_py_") as folder:
        specs = dataset_specs()
        for spec in specs:
            write_dataset(os.path.join(folder, "python_" + spec["name"]), spec["dtype_code"],
                          spec["sequences"], spec["document_indices"])
        with open(os.path.join(folder, "spec.json"), "w") as f:
            json.dump({"datasets": specs}, f)
        texts = corpus_texts()
        with open(os.path.join(folder, "input.jsonl"), "w", encoding="utf-8") as f:
            for i, text in enumerate(texts):
                f.write(json.dumps({"id": i, "text": text}) + "\n")

        env = dict(os.environ, MOE_INDEXED_PY_DIR=folder)
        run = subprocess.run([binary, "--gtest_filter=IndexedDatasetPython.*"], env=env,
                             capture_output=True, text=True)
        print(run.stdout[-2000:], run.stderr[-2000:])
        assert run.returncode == 0 and "[  PASSED  ] 1 test" in run.stdout, "C++ side failed"

        for spec in specs:
            ours = os.path.join(folder, "moecore_" + spec["name"])
            theirs = os.path.join(folder, "python_" + spec["name"])
            for ext in (".bin", ".idx"):
                with open(ours + ext, "rb") as a, open(theirs + ext, "rb") as b:
                    assert a.read() == b.read(), (spec["name"], ext, "bytes differ")
            code, sequences, documents = read_dataset(ours)
            assert code == spec["dtype_code"] and documents == spec["document_indices"]
            assert len(sequences) == len(spec["sequences"]), spec["name"]
            for got, want in zip(sequences, spec["sequences"]):
                assert [int(t) for t in got] == want, (spec["name"], "tokens differ")

        code, sequences, documents = read_dataset(
            os.path.join(folder, "moecore_corpus_text_document"))
        assert code == 8, ("the byte tokenizer's 257 ids need uint16", code)
        assert len(documents) == len(texts) + 1
        for d, text in enumerate(texts):
            want = list(text.encode("utf-8"))
            span = sequences[documents[d]:documents[d + 1]]
            if not want:  # Megatron keeps an empty text as a document without sequences
                assert span == [], (d, "empty document")
                continue
            assert len(span) == 1 and span[0].tolist() == want + [EOD], (d, text)
        print(f"OK: {len(specs)} dtypes byte-identical both ways; "
              f"{len(texts)} preprocessed documents read by numpy {np.__version__}")


if __name__ == "__main__":
    main()
