"""Tuning aid: one forward + backward of flashattn and one of SDPA's CUDNN backend on the same
inputs, between cudaProfilerStart and Stop, for Nsight Compute to profile side by side (not a
claim: see bench/bench.py). Warm-up calls run outside the profiled range.

    ncu --profile-from-start off --section SpeedOfLight --section WarpStateStats \
        --section ComputeWorkloadAnalysis python3 bench/train_ncu.py --shape 4x4096 --dim 128
"""
from __future__ import annotations

import argparse

import torch
from torch.nn.attention import SDPBackend

from bench import Impl, profile_once, sdpa_impl
from flashattn import flash_attn_func


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="4x4096", help="batch x seqlen")
    ap.add_argument("--heads", type=int, default=0, help="heads (0: 2048 / dim)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--no-cudnn", action="store_true")
    args = ap.parse_args()
    b, s = (int(x) for x in args.shape.split("x"))
    h = args.heads or 2048 // args.dim
    torch.manual_seed(0)
    dt = getattr(torch, args.dtype)
    q, k, v = (torch.randn(b, s, h, args.dim, device="cuda", dtype=dt, requires_grad=True)
               for _ in range(3))
    dout = torch.randn(b, s, h, args.dim, device="cuda", dtype=dt)

    ours = Impl(lambda: flash_attn_func(q, k, v, causal=args.causal), (q, k, v), dout).fwdbwd
    cudnn = sdpa_impl(q, k, v, dout, args.causal, SDPBackend.CUDNN_ATTENTION).fwdbwd

    fns = [ours] + ([] if args.no_cudnn else [cudnn])
    profile_once(fns)
    print(f"profiled {len(fns)} forward + backward: b {b} seqlen {s} heads {h} d {args.dim}"
          f" causal {args.causal} {args.dtype}")


if __name__ == "__main__":
    main()
