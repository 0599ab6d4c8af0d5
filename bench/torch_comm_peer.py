#!/usr/bin/env python3
"""The collectives of `moe bench comm`, timed with torch.distributed (NCCL) on the same machine.

Run with torchrun, one process per GPU, beside `moe launch --nproc-per-node N bench comm` in the
same call, so the two tables come from one machine:

    torchrun --nproc-per-node 8 bench/torch_comm_peer.py --max-size 1G --jsonl torch.jsonl

The sizes, the uneven all_to_all_v split and the bandwidth formulas are those of
bench/comm_bench.h (nccl-tests' definitions): "size" is the larger buffer of one rank's call,
algbw = size / time (GB/s, 10^9 bytes), busbw = algbw x 2(n-1)/n for all_reduce and x (n-1)/n
for the others. Each (op, size) runs --warmup untimed calls, a barrier, then --iters calls
between two CUDA events; the time is the slowest rank's mean (an all_reduce with max). Rank 0
prints the table and appends one JSON object per row to --jsonl.
"""
import argparse
import json
import os
import re

import torch
import torch.distributed as dist

OPS = ["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "all_to_all_v"]
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16, "f64": torch.float64}


def parse_size(text):
    match = re.fullmatch(r"(\d+)([kKmMgG]?)(i?[bB])?", text)
    if not match:
        raise SystemExit(f"{text!r} is not a size (bytes, or a number with K, M, G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(match.group(1)) * scale


def skewed_rows(sender, receiver, n, total):
    """Rows `sender` sends `receiver` in all_to_all_v: bench/comm_bench.cpp's skewed_rows."""
    weights = n * (n + 1) // 2
    rows = total * (1 + (sender + receiver) % n) // weights
    if (sender + receiver) % n == n - 1:
        given = sum(total * (1 + k) // weights for k in range(n))
        rows += total - given
    return rows


def bus_factor(op, n):
    return 2.0 * (n - 1) / n if op == "all_reduce" else (n - 1) / n


def make_call(op, count, rank, n, dtype, device):
    """The buffers of one call and the function that runs it."""
    chunk = count // n
    if op == "all_reduce":
        buf = torch.zeros(count, dtype=dtype, device=device)
        return lambda: dist.all_reduce(buf)
    if op == "all_gather":
        inp = torch.zeros(chunk, dtype=dtype, device=device)
        out = torch.empty(count, dtype=dtype, device=device)
        return lambda: dist.all_gather_into_tensor(out, inp)
    if op == "reduce_scatter":
        inp = torch.zeros(count, dtype=dtype, device=device)
        out = torch.empty(chunk, dtype=dtype, device=device)
        return lambda: dist.reduce_scatter_tensor(out, inp)
    inp = torch.zeros(count, dtype=dtype, device=device)
    out = torch.empty(count, dtype=dtype, device=device)
    if op == "all_to_all":
        return lambda: dist.all_to_all_single(out, inp)
    send = [skewed_rows(rank, p, n, count) for p in range(n)]
    recv = [skewed_rows(p, rank, n, count) for p in range(n)]
    return lambda: dist.all_to_all_single(out, inp, output_split_sizes=recv,
                                          input_split_sizes=send)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=OPS, choices=OPS)
    parser.add_argument("--min-size", default="1K")
    parser.add_argument("--max-size", default="1G")
    parser.add_argument("--step-factor", type=int, default=2)
    parser.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--jsonl", default="")
    args = parser.parse_args()

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl", device_id=device)
    rank, n = dist.get_rank(), dist.get_world_size()
    dtype = DTYPES[args.dtype]
    esize = torch.tensor([], dtype=dtype).element_size()
    lead = rank == 0
    out = open(args.jsonl, "a") if lead and args.jsonl else None
    if lead:
        print(f"torch.distributed {torch.__version__} (NCCL {torch.cuda.nccl.version()}): {n} "
              f"ranks, {args.dtype}, {args.iters} iterations after {args.warmup} warm-up; "
              "time = the slowest rank's mean")
        print(f"{'op':<15} {'size':>12} {'count':>12} {'time (us)':>12} {'algbw (GB/s)':>13} "
              f"{'busbw (GB/s)':>13}")

    min_bytes, max_bytes = parse_size(args.min_size), parse_size(args.max_size)
    for op in args.ops:
        size = min_bytes
        while size <= max_bytes:
            count = max(size // esize // n * n, n)
            run = make_call(op, count, rank, n, dtype, device)
            for _ in range(args.warmup):
                run()
            dist.barrier()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(args.iters):
                run()
            stop.record()
            stop.synchronize()
            slowest = torch.tensor([start.elapsed_time(stop) * 1000.0 / args.iters],
                                   dtype=torch.float64, device=device)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            us = slowest.item()
            nbytes = count * esize
            algbw = nbytes / (us * 1e-6) / 1e9
            busbw = algbw * bus_factor(op, n)
            if lead:
                print(f"{op:<15} {nbytes:>12} {count:>12} {us:>12.1f} {algbw:>13.2f} "
                      f"{busbw:>13.2f}", flush=True)
                if out:
                    out.write(json.dumps({"impl": "torch", "op": op, "bytes": nbytes,
                                          "count": count, "dtype": args.dtype, "world_size": n,
                                          "time_us": us, "algbw_gbps": algbw,
                                          "busbw_gbps": busbw}) + "\n")
                    out.flush()
            if size > max_bytes // args.step_factor:
                break
            size *= args.step_factor
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
