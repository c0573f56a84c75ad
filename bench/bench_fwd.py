#!/usr/bin/env python3
"""Forward benchmark, DESIGN §5: FlashAttention's sweep (hidden 2048, 16k tokens, seqlen 512…16k,
head dim 64/128/256, causal and not, bf16 and fp16), flashattn side by side in one process with
PyTorch SDPA's FLASH (FlashAttention-2's kernels), CUDNN, EFFICIENT and MATH backends.
Timing: CUDA events around `reps` back-to-back calls after warm-up, median of `trials`; inputs of
64 MiB each (larger than L2). Prints a table last; writes JSON with the device and git commit.

usage: bench_fwd.py --lib build/libflashattn_c.so [--json out.json] [--quick]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flashattn_ctypes import Library, flops_fwd  # noqa: E402

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def time_ms(fn, reps=10, trials=7, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(trials):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times)


def git_commit():
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.check_output(["git", "-C", str(root), "rev-parse", "HEAD"], text=True).strip()
        dirty = subprocess.call(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "src", "include"]) != 0
        return head + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - the device copy may not be a git checkout
        return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help="a few rows only")
    ap.add_argument("--commit", default=None, help="git commit to record (when not a checkout)")
    args = ap.parse_args()

    lib = Library(args.lib)
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    seqlens = [512, 1024, 2048, 4096, 8192, 16384]
    head_dims = [64, 128, 256]
    dtypes = [torch.bfloat16, torch.float16]
    if args.quick:
        seqlens, head_dims, dtypes = [1024, 4096], [64, 128, 256], [torch.bfloat16]

    rows = []
    mem_note = None
    for dtype in dtypes:
        for d in head_dims:
            for causal in (False, True):
                for s in seqlens:
                    b, h = 16384 // s, 2048 // d
                    torch.manual_seed(0)
                    q, k, v = (torch.randn(b, s, h, d, device=dev, dtype=dtype) for _ in range(3))
                    out = torch.empty_like(q)
                    lse = torch.empty(b, h, s, device=dev, dtype=torch.float32)
                    call = lib.forward_prepared(q, k, v, out, lse, lib.options(causal=causal))
                    flops = flops_fwd(b, h, s, s, d, causal)
                    row = {"dtype": str(dtype).replace("torch.", ""), "head_dim": d, "causal": causal,
                           "seqlen": s, "batch": b, "heads": h, "tflops": {}, "ms": {}}
                    # Extra device memory of one call: the library allocates nothing itself.
                    if mem_note is None:
                        torch.cuda.synchronize()
                        free_before = torch.cuda.mem_get_info()[0]
                        torch.cuda.reset_peak_memory_stats()
                        base = torch.cuda.memory_allocated()
                        o2 = torch.empty_like(q)
                        l2 = torch.empty_like(lse)
                        lib.forward_prepared(q, k, v, o2, l2, lib.options(causal=causal))()
                        torch.cuda.synchronize()
                        mem_note = {
                            "case": f"{row['dtype']} b{b} s{s} h{h} d{d}",
                            "torch_peak_extra_bytes": torch.cuda.max_memory_allocated() - base,
                            "out_plus_lse_bytes": o2.numel() * o2.element_size() + l2.numel() * 4,
                            "device_free_delta_bytes": free_before - torch.cuda.mem_get_info()[0],
                        }
                        del o2, l2
                    ms = time_ms(call)
                    row["ms"]["flashattn"] = ms
                    row["tflops"]["flashattn"] = flops / ms / 1e9
                    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (b, h, s, d) views
                    ref = None
                    for name, backend in BACKENDS.items():
                        if name == "math" and s > 4096:
                            continue  # O(seqlen²) memory
                        try:
                            with sdpa_kernel(backend):
                                fn = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)  # noqa: E731
                                res = fn()
                                t = time_ms(fn, reps=3 if name == "math" else 10,
                                            trials=3 if name == "math" else 7)
                            row["ms"][name] = t
                            row["tflops"][name] = flops / t / 1e9
                            if name == "flash":
                                ref = res.transpose(1, 2)
                        except Exception as e:  # noqa: BLE001 - a backend may not support a shape
                            row["tflops"][name] = None
                            row.setdefault("errors", {})[name] = str(e).splitlines()[0][:200]
                    if ref is not None:
                        row["max_abs_diff_vs_flash"] = (out.float() - ref.float()).abs().max().item()
                    rows.append(row)
                    del q, k, v, out, lse
                    torch.cuda.empty_cache()

    result = {
        "benchmark": "forward",
        "device": torch.cuda.get_device_name(dev),
        "sm_count": props.multi_processor_count,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "git_commit": args.commit or git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # The kernel switches read from the environment (they change which kernels ran).
        "env": {k: os.environ[k] for k in ("FLASHATTN_DISABLE_SM90",)
                if k in os.environ},
        "flops_formula": "4*b*h*sq*sk*d, /2 if causal",
        "memory": mem_note,
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))

    def fmt(x):
        return f"{x:6.1f}" if x is not None else "     -"

    print(f"\nforward TFLOP/s on {result['device']} (commit {result['git_commit'][:12]})")
    print(f"{'dtype':8} {'d':>3} {'causal':6} {'seqlen':>6} | {'ours':>6} {'flash':>6} {'cudnn':>6} "
          f"{'effic':>6} {'math':>6} | {'/flash':>6} {'/cudnn':>6} {'/math':>6} | maxdiff")
    for r in rows:
        t = r["tflops"]
        ratio = lambda n: t["flashattn"] / t[n] if t.get(n) else None  # noqa: E731
        print(f"{r['dtype']:8} {r['head_dim']:3d} {str(r['causal']):6} {r['seqlen']:6d} | "
              f"{fmt(t['flashattn'])} {fmt(t.get('flash'))} {fmt(t.get('cudnn'))} "
              f"{fmt(t.get('efficient'))} {fmt(t.get('math'))} | "
              f"{fmt(ratio('flash'))} {fmt(ratio('cudnn'))} {fmt(ratio('math'))} | "
              f"{r.get('max_abs_diff_vs_flash', float('nan')):.2e}")
    print(f"memory: {mem_note}")


if __name__ == "__main__":
    main()
