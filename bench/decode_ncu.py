"""Tuning aid: one decode call of flashattn and one of SDPA's CUDNN backend on the same KV cache,
between cudaProfilerStart and Stop, for Nsight Compute to profile side by side (not a claim: see
bench/bench.py). Warm-up calls run outside the profiled range.

    ncu --profile-from-start off --set full -o decode python3 bench/decode_ncu.py --shape 1x131072
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench import paged_copy, profile_once
from flashattn import flash_attn_with_kvcache


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1x131072", help="batch x keys")
    ap.add_argument("--heads", default="32/8", help="query/kv heads")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--q", type=int, default=1, help="query tokens")
    ap.add_argument("--page", type=int, default=0, help="page size of a paged copy (0: none)")
    ap.add_argument("--no-cudnn", action="store_true")
    args = ap.parse_args()
    b, s = (int(x) for x in args.shape.split("x"))
    h, hk = (int(x) for x in args.heads.split("/"))
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    q = torch.randn(b, args.q, h, args.dim, device=dev, dtype=dt)
    kc = torch.randn(b, s, hk, args.dim, device=dev, dtype=dt)
    vc = torch.randn(b, s, hk, args.dim, device=dev, dtype=dt)
    lens = torch.full((b,), s, dtype=torch.int32, device=dev)
    causal = args.q > 1
    table = None
    if args.page:  # the same shuffled pages as bench.py's decode rows
        kc, table = paged_copy(kc, args.page, torch.Generator().manual_seed(args.page))
        vc, _ = paged_copy(vc, args.page, torch.Generator().manual_seed(args.page))

    def ours():
        return flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, block_table=table,
                                       causal=causal)

    qt, kt, vt = (x.transpose(1, 2) for x in (q, kc, vc))

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=False, enable_gqa=True)

    fns = [ours] + ([] if args.no_cudnn or table is not None or causal else [cudnn])
    with torch.inference_mode():
        profile_once(fns)
    print(f"profiled {len(fns)} calls: b {b} keys {s} heads {h}/{hk} d {args.dim} q {args.q}"
          f" page {args.page}; K+V {2 * b * s * hk * args.dim * 2 / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
