"""Tuning aid: the score-mod calls (softcap, ALiBi, dropout, beside the plain call) through
flash_attn_func at several head dims, forward and backward TFLOP/s back to back, and decode calls
with a softcap or ALiBi through flash_attn_with_kvcache (µs). Not a claim (bench/bench.py's option
rows are): run it once with each of two wheels in one device call to compare kernels, or with
FLASHATTN_DISABLE_SM90=1 to time the sm80 kernels on a Hopper GPU.

    python3 bench/score_mods.py --tag new [--dims 64,128,256] [--no-decode]
"""
from __future__ import annotations

import argparse

import torch

from bench import alibi_slopes, time_b2b
from flashattn import flash_attn_func, flash_attn_with_kvcache


def training(tag: str, dims):
    """bf16, seqlen 4096, batch 4, 2048 / d heads; causal and not."""
    s, b = 4096, 4
    for d in dims:
        h = 2048 // d
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16,
                               requires_grad=True) for _ in range(3))
        dout = torch.randn_like(q)
        options = {"plain": {}, "softcap": {"softcap": 50.0}, "alibi": {"alibi_slopes": alibi_slopes(h)},
                   "dropout": {"dropout_p": 0.1}}
        for name, kw in options.items():
            for causal in (False, True):
                with torch.no_grad():
                    fwd_ms = time_b2b(lambda: flash_attn_func(q, k, v, causal=causal, **kw), 5, 7)
                out = flash_attn_func(q, k, v, causal=causal, **kw)
                bwd_ms = time_b2b(
                    lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), 5, 7)
                flops = 4 * b * h * s * s * d / (2 if causal else 1)
                print(f"{tag} d{d:3d} {name:8s} causal={int(causal)} fwd "
                      f"{flops / fwd_ms / 1e9:6.1f} bwd {2.5 * flops / bwd_ms / 1e9:6.1f} TFLOP/s",
                      flush=True)
                del out
        del q, k, v, dout


def decode(tag: str):
    """One query token, 32 / 8 heads, a full contiguous cache."""
    for d in (128, 256):
        for b, keys in ((1, 16384), (16, 16384)):
            q = torch.randn(b, 1, 32, d, device="cuda", dtype=torch.bfloat16)
            kc = torch.randn(b, keys, 8, d, device="cuda", dtype=torch.bfloat16)
            vc = torch.randn_like(kc)
            lens = torch.full((b,), keys, dtype=torch.int32, device="cuda")
            for name, kw in (("plain", {}), ("softcap", {"softcap": 50.0}),
                             ("alibi", {"alibi_slopes": alibi_slopes(32)})):
                ms = time_b2b(lambda: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, **kw),
                              20, 7)
                print(f"{tag} decode d{d} b{b} keys {keys} {name:8s} {ms * 1000:7.1f} us",
                      flush=True)
            del q, kc, vc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", default="", help="a label at the start of every line")
    ap.add_argument("--dims", default="64,128,256")
    ap.add_argument("--no-decode", action="store_true")
    args = ap.parse_args()
    training(args.tag, [int(x) for x in args.dims.split(",")])
    if not args.no_decode:
        decode(args.tag)


if __name__ == "__main__":
    main()
