"""Tuning aid for the split-KV heuristic of the decode kernel (not a claim: see bench/bench.py).

For each decode shape, times flash_attn_with_kvcache with num_splits = 0 (the heuristic) and a
range of fixed counts, replayed from a CUDA graph, and splits one call's GPU time between the
decode kernel and the combine kernel (torch.profiler). Prints one line a shape and writes JSON.

    python3 bench/decode_splits.py --json out.json
"""
from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile

from bench import copy_tbps, time_graph
from flashattn import flash_attn_with_kvcache
from provenance import git_commit


def kernel_us(fn, calls: int = 20) -> dict[str, float]:
    """GPU µs per call of each kernel `fn` launches (named by its first 40 characters)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        if e.device_type.name == "CUDA" and e.count >= calls:
            out[e.key[:40]] = e.device_time_total / e.count
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--shapes", default="1/32/8/128/1x4096,1/32/8/128/1x16384,"
                    "1/32/8/128/1x131072,4/64/8/128/64x16384,1/32/8/64/1x16384")
    ap.add_argument("--splits", default="0,1,8,16,24,32,48,64,96,128")
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    copy = copy_tbps()
    rows = []
    for shape in args.shapes.split(","):
        sq, h, hk, d, bs = shape.split("/")
        sq, h, hk, d = int(sq), int(h), int(hk), int(d)
        b, s = (int(x) for x in bs.split("x"))
        torch.manual_seed(0)
        q = torch.randn(b, sq, h, d, dtype=torch.bfloat16, device="cuda")
        kc = torch.randn(b, s, hk, d, dtype=torch.bfloat16, device="cuda")
        vc = torch.randn_like(kc)
        lens = torch.full((b,), s, dtype=torch.int32, device="cuda")
        nbytes = 2 * kc.numel() * 2
        row = {"shape": shape, "kv_bytes": nbytes, "tbps": {}, "kernels_us": {}}
        with torch.inference_mode():
            for n in (int(x) for x in args.splits.split(",")):
                def fn(n=n):
                    return flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens,
                                                   causal=sq > 1, num_splits=n)
                ms = time_graph(fn, 50, args.trials)
                row["tbps"][n] = nbytes / ms / 1e9
                if n in (0, 1):
                    row["kernels_us"][n] = kernel_us(fn)
        rows.append(row)
        best = max(row["tbps"], key=row["tbps"].get)
        print(f"{shape}: heuristic {row['tbps'][0]:.2f} TB/s, best {row['tbps'][best]:.2f} at "
              f"{best}; " + " ".join(f"{n}:{t:.2f}" for n, t in row["tbps"].items()) +
              f"; kernels (heuristic) {row['kernels_us'][0]}", flush=True)
        del q, kc, vc
        torch.cuda.empty_cache()
    print(f"copy {copy:.2f} TB/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"commit": git_commit(), "device": torch.cuda.get_device_name(),
                       "copy_tbps": copy, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
