"""Tuning aid for where a split decode step merges its splits (not a claim: see bench/bench.py).

An eager flash_attn_with_kvcache call on the kept scratch merges the splits in the decode kernel
where the step is short (FwdPlan::merge_in_kernel), a replay of a CUDA graph of the same call
always with the combine kernel (the graph pool's scratch is not zeroed). For each shape this
prints the wall time a call of both (bench.time_b2b: CUDA events around 200 calls back to
back, median of 3) and each kernel's GPU time (torch.profiler), so that the limit in plan_fwd
can be set from one run.

    python3 bench/decode_merge.py --shapes 128/1x16384,256/1x16384,64/1x131072
"""
from __future__ import annotations

import argparse

import torch

from bench import capture_graph, time_b2b
from decode_splits import kernel_us
from flashattn import flash_attn_with_kvcache


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="64/1x16384,128/1x16384,256/1x16384,64/1x131072,"
                    "128/1x131072", help="d/batch x keys (one query, --heads)")
    ap.add_argument("--heads", default="32/8", help="query/kv heads")
    args = ap.parse_args()
    h, hk = (int(x) for x in args.heads.split("/"))
    for shape in args.shapes.split(","):
        d, bs = shape.split("/")
        d = int(d)
        b, s = (int(x) for x in bs.split("x"))
        torch.manual_seed(0)
        q = torch.randn(b, 1, h, d, dtype=torch.bfloat16, device="cuda")
        kc = torch.randn(b, s, hk, d, dtype=torch.bfloat16, device="cuda")
        vc = torch.randn_like(kc)
        lens = torch.full((b,), s, dtype=torch.int32, device="cuda")

        def step():
            return flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens)

        with torch.inference_mode():
            eager = (1000 * time_b2b(step, 200, 3), kernel_us(step))
            graph = capture_graph(step)
            replay = (1000 * time_b2b(graph.replay, 200, 3), kernel_us(graph.replay))
        mib = 2 * kc.numel() * kc.element_size() / 2**20
        print(f"d {d} {b}x{s} ({mib:.0f} MiB of K and V): eager {eager[0]:.1f} µs a call, "
              f"kernels {eager[1]} | graph {replay[0]:.1f} µs, kernels {replay[1]}", flush=True)
        del q, kc, vc, graph
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
