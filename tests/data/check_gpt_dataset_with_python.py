#!/usr/bin/env python3
"""Cross-checks moecore's Megatron GPT dataset indices against numpy (pip install numpy).

1. Python writes spec.json: numpy RandomState draws to reproduce, and dataset cases (corpora
   given by their document lengths; token t of sequence s is s * 1000 + t).
2. The C++ test GPTDatasetPython.* builds every case with moecore (--data-path, --split, --seed,
   sample counts), leaving the index caches (.npy) and the first samples' tokens.
3. Here: numpy.random.RandomState itself checks the draws; an implementation of Megatron's
   algorithms written for this check (numpy for the shuffles, plain Python for the sample and
   blending indices) rebuilds every index, which must equal ours value for value and in dtype,
   and the samples' tokens must be the ones these indices point at.

Usage: python3 tests/data/check_gpt_dataset_with_python.py [path/to/moe_cpu_tests]
"""
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

INT32_MAX = np.iinfo(np.int32).max


def token(sequence, offset):
    return sequence * 1000 + offset


# ---------------------------------------------------------------- Megatron's algorithms


def normalize(weights):
    w = np.array(weights, dtype=np.float64)
    return (w / np.sum(w)).tolist()


def split_bookends(text):
    """--split -> per split (begin, end) fractions or None."""
    values = [float(x) for x in re.findall(r"[.0-9]+", text)]
    values = normalize(values + [0.0] * (3 - len(values)))
    ends = [0]
    for v in values:
        ends.append(ends[-1] + v)
    return [(ends[i], ends[i + 1]) if ends[i + 1] > ends[i] else None for i in range(3)]


def epochs_needed(tokens_per_epoch, num_samples, seq_length):
    if num_samples is None:
        return 1
    epochs = 1
    while epochs * tokens_per_epoch < num_samples * seq_length + 1:
        epochs += 1
    return epochs


def shuffled_documents(documents, epochs, state):
    index = np.tile(np.asarray(documents, dtype=np.int32), epochs)
    state.shuffle(index)
    return index


def sample_rows(lengths, document_index, seq_length, tokens):
    """Rows (position in document_index, offset): each sample spans seq_length + 1 tokens."""
    count = (tokens - 1) // seq_length
    rows = [(0, 0)]
    position, offset = 0, 0
    for _ in range(count):
        need = seq_length + 1
        while True:
            available = lengths[document_index[position]] - offset
            if available >= need:
                offset += need - 1
                break
            need -= available
            if position == len(document_index) - 1:
                offset = lengths[document_index[position]] - 1
                break
            position, offset = position + 1, 0
        rows.append((position, offset))
    return rows


class GPTIndices:
    def __init__(self, lengths, begin, end, num_samples, seq_length, seed):
        documents = list(range(begin, end))
        tokens = int(sum(lengths[begin:end]))
        epochs = epochs_needed(tokens, num_samples, seq_length)
        separate = False
        if epochs > 1:
            before_final = ((epochs - 1) * tokens - 1) // seq_length
            per_epoch = (tokens - 1) // seq_length
            separate = num_samples - before_final < int(0.8 * per_epoch)
        state = np.random.RandomState(seed)
        if separate:
            self.document = np.concatenate((shuffled_documents(documents, epochs - 1, state),
                                            shuffled_documents(documents, 1, state)))
        else:
            self.document = shuffled_documents(documents, epochs, state)
        rows = sample_rows(lengths, self.document, seq_length, epochs * tokens)
        fits = max(len(self.document), max(lengths)) <= INT32_MAX
        self.sample = np.array(rows, dtype=np.int32 if fits else np.int64)
        total = len(rows) - 1
        dtype = np.int64 if total >= np.iinfo(np.uint32).max - 1 else np.uint32
        first = before_final if separate else total
        head = np.arange(first, dtype=dtype)
        state.shuffle(head)
        tail = np.arange(first, total, dtype=dtype)
        state.shuffle(tail)
        self.shuffle = np.concatenate((head, tail))
        self.lengths, self.epochs, self.separate = lengths, epochs, separate

    def __len__(self):
        return len(self.shuffle)

    def tokens(self, i):
        j = int(self.shuffle[i])
        (p0, o0), (p1, o1) = self.sample[j], self.sample[j + 1]
        out = []
        for p in range(p0, p1 + 1):
            sequence = int(self.document[p])
            begin = o0 if p == p0 else 0
            end = o1 + 1 if p == p1 else self.lengths[sequence]
            out += [token(sequence, t) for t in range(begin, end)]
        return out


def greedy_blend(weights, size):
    counts = [0] * len(weights)
    dataset, sample = [], []
    for i in range(size):
        at = max(float(i), 1.0)
        errors = [w * at - c for w, c in zip(weights, counts)]
        d = errors.index(max(errors))  # the first of equal errors
        dataset.append(d)
        sample.append(counts[d])
        counts[d] += 1
    return dataset, sample


def exhaustive_blend(sizes):
    total = sum(sizes)
    weights = [s / float(total) for s in sizes]
    counts = [0] * len(sizes)
    left = sorted(range(len(sizes)))
    dataset, sample = [], []
    i = 0
    while left:
        at = max(float(i), 1.0)
        best = max(left, key=lambda d: (weights[d] * at - counts[d], -d))
        dataset.append(best)
        sample.append(counts[best])
        counts[best] += 1
        if counts[best] == sizes[best]:
            left.remove(best)
        i += 1
    return dataset, sample


class Blend:
    def __init__(self, parts, weights, size):
        if size is not None:
            self.weights = normalize(weights)
            dataset, sample = greedy_blend(self.weights, size)
        else:
            dataset, sample = exhaustive_blend([int(w) for w in weights])
        self.dataset = np.array(dataset, dtype=np.int16)
        self.sample_index = np.array(sample, dtype=np.int64)
        self.parts = parts

    def __len__(self):
        return len(self.dataset)

    def tokens(self, i):
        return self.parts[self.dataset[i]].tokens(int(self.sample_index[i]))


def build_case(case):
    """Per split: a GPTIndices, a Blend, or None; and every GPTIndices with its prefix."""
    args = case["data_path"]
    weights = None
    if len(args) % 2 == 0:
        try:
            weights = [float(w) for w in args[0::2]]
            prefixes = args[1::2]
        except ValueError:
            weights = None
    if weights is None:
        prefixes = args
    bookends = split_bookends(case["split"])
    counts = case["num_samples"]
    S, seed = case["seq_length"], case["seed"]
    built = []

    def corpus_splits(prefix, wanted):
        lengths = case["corpora"][prefix]
        out = [None] * 3
        for s in range(3):
            if bookends[s] is not None:
                n = len(lengths)
                begin, end = (int(round(x * float(n))) for x in bookends[s])
                out[s] = GPTIndices(lengths, begin, end, wanted[s], S, seed)
                built.append((prefix, s, out[s]))
        return out

    if len(prefixes) == 1 and weights is None:
        return corpus_splits(prefixes[0], counts), built
    if weights is not None:
        weights = normalize(weights)
        target = [[math.ceil(c * w) if c is not None else None for c in counts] for w in weights]
        extra = [[int(math.ceil(t * (1 + 0.005))) if t is not None else None for t in row]
                 for row in target]
        per_corpus = [corpus_splits(p, extra[d]) for d, p in enumerate(prefixes)]
    else:
        per_corpus = [corpus_splits(p, [None] * 3) for p in prefixes]
    result = [None] * 3
    for s in range(3):
        if bookends[s] is None:
            continue
        parts = [c[s] for c in per_corpus]
        if weights is not None:
            result[s] = Blend(parts, weights, sum(t[s] for t in target))
        else:
            sizes = [len(p) for p in parts]
            size = None if counts[s] is None else min(counts[s], sum(sizes))
            result[s] = Blend(parts, sizes, size)
    return result, built


# ---------------------------------------------------------------- the cases


def random_lengths(generator, n, low, high):
    return [int(x) for x in generator.integers(low, high, n)]


def make_cases():
    g = np.random.default_rng(20240601)
    big = random_lengths(g, 1000, 1, 150)
    small = random_lengths(g, 120, 0, 90)
    tokens = sum(small)
    per_epoch = (tokens - 1) // 16
    cases = [
        dict(name="single", corpora={"big": big}, data_path=["big"], split="969,30,1",
             seq_length=64, seed=1234, num_samples=[2000, 300, 50]),
        # Just past one epoch: the final epoch is shuffled on its own.
        dict(name="separate_final_epoch", corpora={"small": small}, data_path=["small"],
             split="1", seq_length=16, seed=7, num_samples=[per_epoch + 3, None, None]),
        dict(name="many_epochs", corpora={"small": small}, data_path=["small"],
             split="98,2", seq_length=16, seed=4294967295,
             num_samples=[per_epoch * 4 - 2, 200, 1]),
        dict(name="one_token_samples", corpora={"small": small}, data_path=["small"],
             split="1", seq_length=1, seed=0, num_samples=[500, None, None]),
        dict(name="weighted", corpora={"a": big, "b": small, "c": random_lengths(g, 400, 5, 60)},
             data_path=["0.2", "a", "0.5", "b", "0.3", "c"], split="90,8,2", seq_length=32,
             seed=42, num_samples=[1000, 100, 20]),
        dict(name="nine_weights",
             corpora={f"c{i}": random_lengths(g, 50 + 10 * i, 1, 80) for i in range(9)},
             data_path=sum([[str(0.1 + 0.013 * i), f"c{i}"] for i in range(9)], []),
             split="80,15,5", seq_length=24, seed=3, num_samples=[777, 33, 11]),
        dict(name="unweighted", corpora={"a": big, "b": small}, data_path=["a", "b"],
             split="1", seq_length=32, seed=11, num_samples=[None, None, None]),
        dict(name="unweighted_capped", corpora={"a": big, "b": small}, data_path=["a", "b"],
             split="80,20", seq_length=32, seed=12, num_samples=[300, 40, 0]),
    ]
    for case in cases:
        case["samples_to_dump"] = 64
    return cases


RANDOM = [
    dict(seed=0, permutation=1, randint=[0, 10, 20]),
    dict(seed=1, permutation=10, randint=[-100, 100, 10]),
    dict(seed=1234, permutation=1000, randint=[0, 2**40, 5]),
    dict(seed=2**32 - 1, permutation=5000, randint=[0, 2**62, 5]),
    dict(seed=987654321, permutation=0, randint=[5, 6, 3]),
    dict(seed=31337, permutation=70000, randint=[0, 2**32 - 1, 7]),
]


# ---------------------------------------------------------------- the comparison


def check_random(folder):
    for k, r in enumerate(RANDOM):
        state = np.random.RandomState(r["seed"])
        expected = list(state.permutation(r["permutation"]))
        low, high, size = r["randint"]
        expected += list(state.randint(low, high, size=size))
        expected += list(state.randint(0, 2**32, size=5, dtype=np.uint64))
        ours = np.load(os.path.join(folder, f"random_{k}.npy"))
        assert ours.tolist() == [int(x) for x in expected], f"RandomState draws differ: {r}"


def same(path, expected, what):
    ours = np.load(path)
    assert ours.dtype == expected.dtype, f"{what}: dtype {ours.dtype}, Megatron's {expected.dtype}"
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} != {expected.shape}"
    assert np.array_equal(ours, expected), f"{what}: values differ"


def check_case(folder, case):
    splits, built = build_case(case)
    cache = os.path.join(folder, case["name"], "cache")
    names = ["train", "valid", "test"]
    found = {}
    for path in glob.glob(os.path.join(cache, "*-GPTDataset-*-description.txt")):
        with open(path) as f:
            description = json.load(f)
        found[(description["dataset_path"], description["index_split"])] = path[:-len("description.txt")]
    assert len(found) == len(built), f"{case['name']}: {len(found)} GPT caches, {len(built)} expected"
    separate = 0
    for prefix, s, ix in built:
        base = found[(prefix, names[s])]
        what = f"{case['name']} {prefix} {names[s]}"
        same(base + "document_index.npy", ix.document, what + " document_index")
        same(base + "sample_index.npy", ix.sample, what + " sample_index")
        same(base + "shuffle_index.npy", ix.shuffle, what + " shuffle_index")
        separate += ix.separate
    for s, top in enumerate(splits):
        path = os.path.join(folder, case["name"], f"samples_{names[s]}.npy")
        if top is None:
            assert not os.path.exists(path), f"{case['name']}: unexpected {names[s]} split"
            continue
        if isinstance(top, Blend):
            matches = glob.glob(os.path.join(cache, f"*-BlendedDataset-{names[s]}-dataset_index.npy"))
            assert len(matches) == 1, f"{case['name']}: {matches}"
            same(matches[0], top.dataset, f"{case['name']} {names[s]} dataset_index")
            same(matches[0].replace("dataset_index", "dataset_sample_index"), top.sample_index,
                 f"{case['name']} {names[s]} dataset_sample_index")
        samples = np.load(path)
        rows = min(len(top), case["samples_to_dump"])
        assert samples.shape == (rows, case["seq_length"] + 1), (case["name"], samples.shape)
        for i in range(rows):
            assert samples[i].tolist() == top.tokens(i), f"{case['name']} {names[s]} sample {i}"
    return separate


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "build/cpu/tests/moe_cpu_tests"
    cases = make_cases()
    with tempfile.TemporaryDirectory(prefix="moe_gptds_py_") as folder:
        with open(os.path.join(folder, "spec.json"), "w") as f:
            json.dump({"random": RANDOM, "cases": cases}, f)
        env = dict(os.environ, MOE_GPT_DATASET_PY_DIR=folder)
        run = subprocess.run([binary, "--gtest_filter=GPTDatasetPython.*"], env=env,
                             capture_output=True, text=True)
        print(run.stdout[-2000:], run.stderr[-2000:])
        assert run.returncode == 0 and "[  PASSED  ] 1 test" in run.stdout, "C++ side failed"
        check_random(folder)
        separate = sum(check_case(folder, case) for case in cases)
        assert separate >= 1, "no case exercised the separate final epoch"
    print(f"OK: {len(RANDOM)} RandomState streams and {len(cases)} dataset cases equal numpy "
          f"{np.__version__} and Megatron's algorithms")


if __name__ == "__main__":
    main()
