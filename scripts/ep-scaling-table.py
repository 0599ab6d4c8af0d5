#!/usr/bin/env python3
"""Expert-parallel weak scaling from `moe bench moe-ep --jsonl` rows (scripts/gpu-scale.sh ep).

Each row's per-GPU expert TFLOP/s as a share of the same shape, tokens and routing at EP 1 (the
whole layer on one GPU; the exchange does not apply there), the goal being at least 0.90; and
the dispatch and combine throughput of the exchange, beside DeepEP's published intranode
figures (153 GB/s dispatch, 158 GB/s combine: H800, NVLink 160 GB/s) as the anchor.

    scripts/ep-scaling-table.py ep.jsonl
"""
import json
import sys


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    base = {}
    for r in rows:
        if r["ep"] == 1:
            key = (r["shape"], r["tokens_per_rank"], r["routing"])
            base[key] = max(base.get(key, 0.0), r["tflops_per_gpu"])
    print("| shape | T/GPU | routing | exchange | EP | fwd+bwd ms | TFLOP/s/GPU | of EP 1 "
          "| dispatch GB/s | combine GB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["shape"], r["routing"], r["exchange"], r["ep"])):
        ref = base.get((r["shape"], r["tokens_per_rank"], r["routing"]))
        share = f"{r['tflops_per_gpu'] / ref:.2f}" if ref else "-"
        dispatch = r.get("dispatch_gbps") or 0.0
        combine = r.get("combine_gbps") or 0.0
        print(f"| {r['shape']} | {r['tokens_per_rank']} | {r['routing']} | {r['exchange']} "
              f"| {r['ep']} | {r['fwd_bwd_ms']:.2f} | {r['tflops_per_gpu']:.3g} | {share} "
              f"| {dispatch:.3g} | {combine:.3g} |")
    print("\nGoal: at least 0.90 of EP 1 per GPU. Anchor: DeepEP intranode 153 (dispatch) / 158 "
          "(combine) GB/s on H800.")


if __name__ == "__main__":
    main()
