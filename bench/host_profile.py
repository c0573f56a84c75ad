#!/usr/bin/env python3
"""Where the host time of one synchronised call goes: flashattn's flash_attn_func against SDPA's
FLASH backend, on one shape (default: bf16, batch 32, seqlen 512, 16 heads, d 128, causal,
forward + backward: the sweep's row where host time weighs most).

For each implementation, `calls` iterations of (call, synchronise) run under torch.profiler (CPU
and CUDA activities). Per iteration it reports the wall time, the time from the iteration's start
to the first kernel on the GPU (host work the GPU waits for), the GPU's busy time (kernels), and
the gaps between kernels; then the CPU operations and CUDA API calls with the most self time, and
(with --cprofile) the Python functions of a cProfile run.

usage: host_profile.py [--seqlen 512] [--head-dim 128] [--batch B] [--heads H] [--fwd-only] [--calls 20] [--json F]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile, record_function

from flashattn import flash_attn_func
from provenance import git_commit


def make_calls(args):
    s, d = args.seqlen, args.head_dim
    b = args.batch or 16384 // s
    h = args.heads or 2048 // d
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16).requires_grad_()
               for _ in range(3))
    dout = torch.randn_like(q)
    qt, kt, vt = (x.detach().transpose(1, 2).requires_grad_() for x in (q, k, v))
    dot = dout.transpose(1, 2)

    def ours():
        out = flash_attn_func(q, k, v, causal=args.causal)
        if not args.fwd_only:
            torch.autograd.grad(out, (q, k, v), dout)

    def flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=args.causal)
        if not args.fwd_only:
            torch.autograd.grad(out, (qt, kt, vt), dot)

    return {"flashattn": ours, "sdpa_flash": flash}


def profile_one(fn, calls: int, top: int) -> dict:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            with record_function(f"iteration_{i}"):
                fn()
                torch.cuda.synchronize()
    events = prof.events()
    iters = sorted((e for e in events if e.name.startswith("iteration_")),
                   key=lambda e: e.time_range.start)
    kernels = sorted((e for e in events if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    per = []
    for it in iters:
        lo, hi = it.time_range.start, it.time_range.end
        ks = [k for k in kernels if lo <= k.time_range.start <= hi]
        if not ks:
            continue
        busy = sum(k.time_range.end - k.time_range.start for k in ks)
        first, last = ks[0].time_range.start, max(k.time_range.end for k in ks)
        per.append({"wall_us": hi - lo, "to_first_kernel_us": first - lo, "gpu_busy_us": busy,
                    "gaps_between_kernels_us": (last - first) - busy, "kernels": len(ks),
                    "after_last_kernel_us": hi - last})
    summary = {key: statistics.median(p[key] for p in per) for key in per[0]} if per else {}
    cpu = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    cpu.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [{"name": e.key, "calls_per_iteration": e.count / calls,
            "self_cpu_us_per_iteration": e.self_cpu_time_total / calls} for e in cpu[:top]]
    return {"median_per_iteration": summary, "top_cpu_self": ops}


def python_profile(fn, calls: int, top: int) -> str:
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(calls):
        fn()
        torch.cuda.synchronize()
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=0, help="default: 16384 // seqlen tokens")
    ap.add_argument("--heads", type=int, default=0, help="default: 2048 // head_dim")
    ap.add_argument("--no-causal", dest="causal", action="store_false")
    ap.add_argument("--fwd-only", action="store_true")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--cprofile", action="store_true", help="also a cProfile of flashattn's call")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    calls = make_calls(args)
    report = {"case": {"dtype": "bfloat16", "seqlen": args.seqlen, "head_dim": args.head_dim,
                       "batch": args.batch or 16384 // args.seqlen,
                       "heads": args.heads or 2048 // args.head_dim,
                       "causal": args.causal, "pass": "fwd" if args.fwd_only else "fwd+bwd"},
              "device": torch.cuda.get_device_name(), "git_commit": git_commit()}
    for name, fn in calls.items():
        report[name] = profile_one(fn, args.calls, args.top)
    if args.cprofile:
        report["flashattn_cprofile"] = python_profile(calls["flashattn"], args.calls, args.top)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(f"host profile: {report['case']} on {report['device']}")
    for name in calls:
        m = report[name]["median_per_iteration"]
        print(f"{name:11s} " + ", ".join(f"{k} {v:.1f}" for k, v in m.items()))
        for op in report[name]["top_cpu_self"]:
            print(f"    {op['self_cpu_us_per_iteration']:8.1f} us  x{op['calls_per_iteration']:<4.1f}"
                  f" {op['name'][:90]}")
    if args.cprofile:
        print(report["flashattn_cprofile"])


if __name__ == "__main__":
    main()
