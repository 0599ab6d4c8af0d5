#!/usr/bin/env python3
"""Prints YaRN inverse frequencies and attention factors the way Hugging Face transformers'
_compute_yarn_parameters (modeling_rope_utils.py) computes them, with numpy float32 standing in
for torch's float32 ops (no torch needed). rope_test.cpp holds the values this prints.

    python3 tests/ops/yarn_reference.py
"""
import math

import numpy as np


def get_mscale(scale, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def hf_yarn(dim, base, factor, original_max, beta_fast=32, beta_slow=1, mscale=None,
            mscale_all_dim=None, attention_factor=None, truncate=True):
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)

    def find_correction_dim(num_rotations):
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low = find_correction_dim(beta_fast)
    high = find_correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    f32 = np.float32
    # torch: base ** (arange(0, dim, 2).float() / dim), all float32
    pos_freqs = np.power(f32(base), np.arange(0, dim, 2).astype(f32) / f32(dim)).astype(f32)
    extra = (f32(1.0) / pos_freqs).astype(f32)
    inter = (f32(1.0) / (f32(factor) * pos_freqs)).astype(f32)
    ramp = np.clip((np.arange(dim // 2, dtype=f32) - f32(low)) / f32(high - low), 0, 1).astype(f32)
    extra_factor = (f32(1) - ramp).astype(f32)
    inv_freq = (inter * (f32(1) - extra_factor) + extra * extra_factor).astype(f32)
    return inv_freq, attention_factor, low, high


CASES = {
    # DeepSeek-V3: qk_rope_head_dim 64, rope_theta 10000, factor 40, original 4096, mscale 1/1.
    "deepseek_v3": dict(dim=64, base=10000.0, factor=40.0, original_max=4096, beta_fast=32,
                        beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
    # mscale != mscale_all_dim: attention factor != 1.
    "mscale_ratio": dict(dim=40, base=50000.0, factor=8.0, original_max=2048, beta_fast=16,
                         beta_slow=2, mscale=1.0, mscale_all_dim=0.5),
    # No mscale: attention factor = get_mscale(factor); no truncation.
    "no_mscale_untruncated": dict(dim=32, base=10000.0, factor=4.0, original_max=1024,
                                  truncate=False),
}

if __name__ == "__main__":
    for name, case in CASES.items():
        inv_freq, attn, low, high = hf_yarn(**case)
        print(f"{name}: low={low} high={high} attention_factor={attn!r}")
        print("  inv_freq = {" + ", ".join(f"{float(v):.9g}" for v in inv_freq) + "}")
