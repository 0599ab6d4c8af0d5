#!/usr/bin/env python3
"""Cross-checks moecore's tokenizers against pip's `tokenizers` and `sentencepiece` on a few MB.

1. Text: every Debian fortune, slices of this repository's sources, the hand-written Unicode lines
   of tests/fixtures/tokenizers/tokenizer_styles.py, their random mixtures, and random code point
   soups (letters of Unicode 15 / 16, combining marks, every kind of whitespace, digits of many
   scripts, contractions with ſ and odd case, special tokens).
2. Tokenizers: the committed fixtures (GPT-2, Llama-3, Qwen2 styles and the variant), a
   Llama-3-style tokenizer with a 32k vocabulary trained here on the same text, and the
   SentencePiece kind made here (tests/data/sentencepiece_styles.py): two tokenizer.model files
   (BPE and unigram, byte_fallback) and three tokenizer.json files (Llama-2's legacy and
   Metaspace conversions of the BPE model, a BPE with byte_fallback and Metaspace).
3. Python writes texts.json and, per tokenizer, expected.json (encode with and without special
   tokens, decode of random ids; for tokenizer.model files Megatron's SentencePieceTokenizer and
   Llama2Tokenizer on `sentencepiece`); the C++ tests HfBpePython.* and SentencePiecePython.*
   must give the same ids and text.
4. With --speed: the speed of `tokenizers` on one thread (TOKENIZERS_PARALLELISM=false), warm
   cache, encode() per document and encode_batch() (sequential under that setting); with --moe
   also `moe bench tokenizer` on the same text and tokenizers, for comparison.

Usage: python3 tests/data/check_tokenizers_with_python.py path/to/moe_cpu_tests
       [--speed [--moe path/to/moe]] [--keep DIR]   (needs pip's tokenizers and sentencepiece)
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "fixtures", "tokenizers"))
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

import tokenizer_styles as styles  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sentencepiece_styles  # noqa: E402

# Code point pools of the random soups: (weight, [ranges]).
POOLS = [
    (30, [(0x20, 0x7E)]),
    (8, [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
         (0x180E, 0x180E), (0x2000, 0x200B), (0x2028, 0x2029), (0x202F, 0x202F),
         (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)]),
    (6, [(0xA1, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F)]),
    (6, [(0x300, 0x36F), (0x1AB0, 0x1AFF), (0x20D0, 0x20FF), (0xFE20, 0xFE2F)]),
    (6, [(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x1100, 0x11FF)]),
    (4, [(0x1F300, 0x1FAFF), (0x2600, 0x27BF), (0x1F1E6, 0x1F1FF), (0xFE0F, 0xFE0F),
         (0x200D, 0x200D)]),
    (4, [(0x1C89, 0x1C8A), (0xA7CB, 0xA7DC), (0x105C0, 0x105F3), (0x10D40, 0x10D85),
         (0x116D0, 0x116E3), (0x11BC0, 0x11BF9), (0x16D40, 0x16D79), (0x1E5D0, 0x1E5FA),
         (0x2EBF0, 0x2EE5D), (0x31350, 0x323AF), (0x1CCF0, 0x1CCF9)]),
    (4, [(0x30, 0x39), (0x660, 0x669), (0x6F0, 0x6F9), (0x966, 0x96F), (0xFF10, 0xFF19),
         (0x2160, 0x2188), (0xB2, 0xB3), (0xBC, 0xBE), (0x2460, 0x249B), (0x1D7CE, 0x1D7FF)]),
    (3, [(0x0, 0x10FFFF)]),
]
WORDS = ["'s", "'S", "'ll", "'LL", "'lL", "'ſ", "'re", "'VE", "'m", "'D", "'t", "'", "''",
         "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<mask>", " <mask> ",
         "[R]  ", "Cafe\u0301", "<think>", "<|eot_id|>", "<|reserved_special_token_9|>", "\r\n",
         "   ", "\n\n", "123456", "e\u0301", "\u212b", "\u1100\u1161\u11a8",
         "<s>", "</s>", "<unk>", "<pad>", "<EOD>", "<CLS>", "<MASK>", "<sep>", "<0x41>", "\u2581",
         " \u2581 ", "\x00", "\x01\x02", "\t\t "]


def random_code_point(rng):
    weights = [w for w, _ in POOLS]
    ranges = rng.choices(POOLS, weights)[0][1]
    low, high = rng.choice(ranges)
    while True:
        c = rng.randint(low, high)
        if not 0xD800 <= c < 0xE000:
            return chr(c)


def soup(rng, length):
    parts = []
    while len(parts) < length:
        parts.append(rng.choice(WORDS) if rng.random() < 0.08 else random_code_point(rng))
    return "".join(parts)


def write_expected(tok, texts, eos, rng, folder):
    expected = {
        "tokenizers_version": tokenizers.__version__,
        "encode": [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)],
        "encode_with_special_tokens": [tok.encode(t, add_special_tokens=True).ids
                                       for t in texts[:6]],
        "eos_id": tok.token_to_id(eos),
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "decode": styles.decode_cases(tok, rng, count=300, length=40),
    }
    with open(os.path.join(folder, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False)
    return sum(len(ids) for ids in expected["encode"])


def time_python(tok, texts, passes=3):
    """Seconds of one pass (median of `passes` after a warm-up pass) on one thread."""
    def median(run):
        run()
        times = []
        for _ in range(passes):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]
    per_call = median(lambda: [tok.encode(t, add_special_tokens=False) for t in texts])
    batch = median(lambda: tok.encode_batch(texts, add_special_tokens=False))
    return per_call, batch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tests_binary")
    parser.add_argument("--speed", action="store_true", help="time tokenizers on one thread")
    parser.add_argument("--moe", help="with --speed: also run this `moe bench tokenizer`")
    parser.add_argument("--keep", help="write the files here and keep them")
    args = parser.parse_args()

    rng = random.Random(1234)
    fortunes = styles.fortunes_documents()
    sources = styles.source_documents()
    texts = [""] + styles.check_text_documents(rng, fortunes, sources,
                                               count_fortunes=len(fortunes),
                                               count_sources=len(sources), source_chars=6000)
    texts += [soup(rng, rng.randint(1, 400)) for _ in range(2000)]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6

    folder = args.keep or tempfile.mkdtemp(prefix="moe_tokenizers_")
    os.makedirs(folder, exist_ok=True)
    try:
        with open(os.path.join(folder, "texts.json"), "w", encoding="utf-8") as f:
            json.dump(texts, f, ensure_ascii=False)
        names = []
        for style in styles.STYLES:
            src = os.path.join(REPO, "tests", "fixtures", "tokenizers", style)
            dst = os.path.join(folder, style)
            os.makedirs(dst, exist_ok=True)
            for name in ["tokenizer.json", "tokenizer_config.json"]:
                shutil.copy(os.path.join(src, name), dst)
            names.append(style)
        config, eos = styles.build("llama3", styles.training_corpus(rng) + texts[:3000], 32000)
        styles.save(config, eos, os.path.join(folder, "llama3_32k"))
        names.append("llama3_32k")
        spm_models, sp_styles = sentencepiece_styles.build_all(
            styles.training_corpus(rng) + texts[:3000], folder)
        names += sp_styles
        for name in spm_models:
            sentencepiece_styles.write_spm_expected(
                os.path.join(folder, name, "tokenizer.model"), texts, rng,
                os.path.join(folder, name))
        with open(os.path.join(folder, "sentencepiece.json"), "w") as f:
            json.dump(spm_models, f)
        with open(os.path.join(folder, "styles.json"), "w") as f:
            json.dump(names, f)

        speeds = {}
        for name in names:
            path = os.path.join(folder, name)
            tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
            with open(os.path.join(path, "tokenizer_config.json")) as f:
                eos = json.load(f)["eos_token"]
            tokens = write_expected(tok, texts, eos, rng, path)
            if args.speed:
                speeds[name] = (tokens,) + time_python(tok, texts)
        print(f"{len(texts)} texts, {megabytes:.2f} MB; tokenizers {tokenizers.__version__}")

        env = dict(os.environ, MOE_TOKENIZERS_PY_DIR=folder)
        run = subprocess.run([args.tests_binary,
                              "--gtest_filter=HfBpePython.*:SentencePiecePython.*"], env=env,
                             capture_output=True, text=True, errors="replace")
        print(run.stdout[-6000:], run.stderr[-2000:])
        if run.returncode != 0 or "[  PASSED  ] 2 tests" not in run.stdout:
            sys.exit("HfBpePython.* or SentencePiecePython.* failed: moecore's ids differ from "
                     "tokenizers' / sentencepiece's")
        print("ids and decoded text identical to tokenizers' for", ", ".join(names))
        print("ids and decoded text identical to sentencepiece's (Megatron's "
              "SentencePieceTokenizer, Llama2Tokenizer) for", ", ".join(spm_models))

        if not args.speed:
            return
        print("\nHugging Face tokenizers, one thread (TOKENIZERS_PARALLELISM=false), warm cache:")
        print(f"{'tokenizer':<14} {'tokens':>10} {'encode() MB/s':>14} {'tokens/s':>12} "
              f"{'encode_batch MB/s':>18} {'tokens/s':>12}")
        for name, (tokens, per_call, batch) in speeds.items():
            print(f"{name:<14} {tokens:>10} {megabytes / per_call:>14.2f} {tokens / per_call:>12.0f} "
                  f"{megabytes / batch:>18.2f} {tokens / batch:>12.0f}")
        if args.moe:
            for name in names:
                print(f"\n$ moe bench tokenizer --tokenizer-model {name} --input texts.json")
                sys.stdout.flush()
                subprocess.run([args.moe, "bench", "tokenizer", "--tokenizer-model",
                                os.path.join(folder, name), "--input",
                                os.path.join(folder, "texts.json")], check=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
