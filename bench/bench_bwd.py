#!/usr/bin/env python3
"""Backward benchmark, DESIGN §5: the forward's sweep (hidden 2048, 16k tokens, seqlen 512…16k,
head dim 64/128/256, causal and not, bf16 and fp16). For each row, in one process:
  - flashattn: backward alone, forward + backward, and the deterministic backward;
  - PyTorch SDPA's FLASH (FlashAttention-2's kernels) and CUDNN backends: backward alone (autograd
    with retain_graph, the forward's graph kept) and forward + backward.
TFLOP/s with FlashAttention's formulas: forward 4·b·h·s²·d (halved when causal), backward 2.5×
that, forward + backward 3.5× that. Timing: CUDA events, median of trials (bench_fwd.time_ms).
Then the GQA memory case of issue 4: heads_q 32, heads_kv 4, seqlen 8k, d 128, bf16: peak device
memory of one backward, ours against SDPA FLASH (enable_gqa, or K/V expanded where it refuses).

usage: bench_bwd.py --lib build/libflashattn_c.so [--json out.json] [--quick]
         [--head-dims 64,128] [--seqlens 1024,4096] [--dtypes bfloat16,float16] [--causal both|y|n]
         [--ours-only]   (a subset of the sweep; --ours-only skips the SDPA backends and GQA memory)
"""
import argparse
import ctypes
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fwd import git_commit, time_ms  # noqa: E402
from flashattn_ctypes import Library, flops_fwd  # noqa: E402

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


class MemPool:
    """The high-water mark of the CUDA runtime's default memory pool, where flashattn takes its
    stream-ordered scratch (cudaMallocAsync); PyTorch's own allocator does not see it."""

    USED_MEM_HIGH = 8  # cudaMemPoolAttrUsedMemHigh

    def __init__(self):
        self.rt = None
        for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
            try:
                self.rt = ctypes.CDLL(name)
                break
            except OSError:
                continue
        self.pool = ctypes.c_void_p()
        if self.rt is not None:
            dev = torch.cuda.current_device()
            if self.rt.cudaDeviceGetDefaultMemPool(ctypes.byref(self.pool), dev) != 0:
                self.rt = None

    def reset(self):
        if self.rt is not None:
            zero = ctypes.c_uint64(0)
            self.rt.cudaMemPoolSetAttribute(self.pool, self.USED_MEM_HIGH, ctypes.byref(zero))

    def high(self):
        if self.rt is None:
            return None
        v = ctypes.c_uint64(0)
        self.rt.cudaMemPoolGetAttribute(self.pool, self.USED_MEM_HIGH, ctypes.byref(v))
        return v.value


def gqa_memory(lib, pool):
    """Peak extra memory of one backward at heads_q 32, heads_kv 4, seqlen 8k, d 128, bf16."""
    dev = torch.device("cuda")
    b, s, hq, hkv, d = 1, 8192, 32, 4, 128
    torch.manual_seed(0)
    q = torch.randn(b, s, hq, d, device=dev, dtype=torch.bfloat16)
    k, v = (torch.randn(b, s, hkv, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
    dout = torch.randn_like(q)
    out, lse = torch.empty_like(q), torch.empty(b, hq, s, device=dev, dtype=torch.float32)
    lib.forward_prepared(q, k, v, out, lse, lib.options(causal=True))()
    res = {"case": f"bf16 b{b} s{s} heads_q {hq} heads_kv {hkv} d{d} causal"}

    # Ours: the gradients the caller allocates (dq, dk, dv at their own sizes) + our scratch.
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    pool.reset()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    lib.backward_prepared(dout, q, k, v, out, lse, dq, dk, dv, lib.options(causal=True))()
    torch.cuda.synchronize()
    scratch = pool.high()
    res["flashattn_grad_bytes"] = torch.cuda.max_memory_allocated() - base
    res["flashattn_scratch_bytes"] = scratch
    res["flashattn_peak_bytes"] = res["flashattn_grad_bytes"] + (scratch or 0)
    del dq, dk, dv

    # SDPA FLASH: autograd through (b, h, s, d) views; the backward's peak over the forward's.
    qt, kt, vt = (x.transpose(1, 2).detach().requires_grad_() for x in (q, k, v))
    for mode in ("enable_gqa", "expanded"):
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                if mode == "enable_gqa":
                    o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
                else:
                    ke = kt.repeat_interleave(hq // hkv, dim=1)
                    ve = vt.repeat_interleave(hq // hkv, dim=1)
                    o = F.scaled_dot_product_attention(qt, ke, ve, is_causal=True)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                o.backward(dout.transpose(1, 2))
                torch.cuda.synchronize()
            res["sdpa_flash_mode"] = mode
            res["sdpa_flash_peak_bytes"] = torch.cuda.max_memory_allocated() - base
            break
        except Exception as e:  # noqa: BLE001 - enable_gqa may be refused by the backend
            res.setdefault("sdpa_flash_errors", {})[mode] = str(e).splitlines()[0][:200]
        finally:
            for t in (qt, kt, vt):
                t.grad = None
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help="a few rows only")
    ap.add_argument("--commit", default=None, help="git commit to record (when not a checkout)")
    ap.add_argument("--head-dims", default=None, help="comma-separated subset, e.g. 128")
    ap.add_argument("--seqlens", default=None, help="comma-separated subset, e.g. 4096,16384")
    ap.add_argument("--dtypes", default=None, help="comma-separated subset: bfloat16,float16")
    ap.add_argument("--causal", choices=("both", "y", "n"), default="both")
    ap.add_argument("--ours-only", action="store_true", help="skip the SDPA backends")
    args = ap.parse_args()

    seqlens = [512, 1024, 2048, 4096, 8192, 16384]
    head_dims = [64, 128, 256]
    dtypes = [torch.bfloat16, torch.float16]
    if args.quick:
        seqlens, head_dims, dtypes = [1024, 4096], [64, 128, 256], [torch.bfloat16]
    if args.head_dims:
        head_dims = [int(x) for x in args.head_dims.split(",")]
    if args.seqlens:
        seqlens = [int(x) for x in args.seqlens.split(",")]
    if args.dtypes:
        names = args.dtypes.split(",")
        bad = [x for x in names if x not in ("bfloat16", "float16")]
        if bad:
            ap.error(f"--dtypes: expected bfloat16 and/or float16, got {','.join(bad)}")
        dtypes = [getattr(torch, x) for x in names]
    # The sweep's shape: 16384 tokens (batch = 16384 / seqlen), hidden 2048 (heads = 2048 / d).
    if any(s < 1 or 16384 % s for s in seqlens):
        ap.error(f"--seqlens: expected divisors of 16384, got {seqlens}")
    if any(d < 1 or d > 2048 for d in head_dims):
        ap.error(f"--head-dims: expected 1…2048, got {head_dims}")
    causals = {"both": (False, True), "y": (True,), "n": (False,)}[args.causal]

    lib = Library(args.lib)
    pool = MemPool()
    dev = torch.device("cuda")

    rows = []
    for dtype in dtypes:
        for d in head_dims:
            for causal in causals:
                for s in seqlens:
                    b, h = 16384 // s, 2048 // d
                    torch.manual_seed(0)
                    q, k, v, dout = (torch.randn(b, s, h, d, device=dev, dtype=dtype) for _ in range(4))
                    out = torch.empty_like(q)
                    lse = torch.empty(b, h, s, device=dev, dtype=torch.float32)
                    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
                    fwd = lib.forward_prepared(q, k, v, out, lse, lib.options(causal=causal))
                    bwd = lib.backward_prepared(dout, q, k, v, out, lse, dq, dk, dv,
                                                lib.options(causal=causal))
                    bwd_det = lib.backward_prepared(dout, q, k, v, out, lse, dq, dk, dv,
                                                    lib.options(causal=causal, deterministic=True))
                    f_fwd = flops_fwd(b, h, s, s, d, causal)
                    row = {"dtype": str(dtype).replace("torch.", ""), "head_dim": d, "causal": causal,
                           "seqlen": s, "batch": b, "heads": h, "ms": {}, "tflops": {}}

                    def both():
                        fwd()
                        bwd()

                    fwd()
                    for name, fn, mult in (("flashattn_bwd", bwd, 2.5), ("flashattn_fwdbwd", both, 3.5),
                                           ("flashattn_bwd_det", bwd_det, 2.5)):
                        ms = time_ms(fn)
                        row["ms"][name] = ms
                        row["tflops"][name] = mult * f_fwd / ms / 1e9
                    fwd()
                    bwd()
                    grads = (dq.clone(), dk.clone(), dv.clone())

                    qt, kt, vt = (x.transpose(1, 2).detach().requires_grad_() for x in (q, k, v))
                    dot = dout.transpose(1, 2)
                    for name, backend in ({} if args.ours_only else BACKENDS).items():
                        try:
                            with sdpa_kernel(backend):
                                def run_fb():
                                    o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
                                    torch.autograd.grad(o, (qt, kt, vt), dot)

                                o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

                                def run_b():
                                    torch.autograd.grad(o, (qt, kt, vt), dot, retain_graph=True)

                                t_b = time_ms(run_b)
                                t_fb = time_ms(run_fb)
                                if name == "flash":
                                    ref = torch.autograd.grad(o, (qt, kt, vt), dot, retain_graph=True)
                                    row["max_abs_diff_vs_flash"] = max(
                                        (ours.float() - r.transpose(1, 2).float()).abs().max().item()
                                        for ours, r in zip(grads, ref))
                                del o
                            row["ms"][f"{name}_bwd"] = t_b
                            row["ms"][f"{name}_fwdbwd"] = t_fb
                            row["tflops"][f"{name}_bwd"] = 2.5 * f_fwd / t_b / 1e9
                            row["tflops"][f"{name}_fwdbwd"] = 3.5 * f_fwd / t_fb / 1e9
                        except Exception as e:  # noqa: BLE001 - a backend may not support a shape
                            row.setdefault("errors", {})[name] = str(e).splitlines()[0][:200]
                    rows.append(row)
                    del q, k, v, dout, out, lse, dq, dk, dv, qt, kt, vt, grads
                    torch.cuda.empty_cache()

    memory = None if args.ours_only else gqa_memory(lib, pool)
    result = {
        "benchmark": "backward",
        "device": torch.cuda.get_device_name(dev),
        "sm_count": torch.cuda.get_device_properties(dev).multi_processor_count,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "git_commit": args.commit or git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # The kernel switches read from the environment (they change which kernels ran).
        "env": {k: os.environ[k] for k in ("FLASHATTN_DISABLE_SM90",)
                if k in os.environ},
        "flops_formula": "fwd 4*b*h*sq*sk*d (/2 if causal); bwd 2.5x fwd; fwd+bwd 3.5x fwd",
        "gqa_memory": memory,
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))

    def fmt(x):
        return f"{x:6.1f}" if x is not None else "     -"

    def ratio(t, a, b):
        r = t[a] / t[b] if t.get(a) and t.get(b) else None
        return f"{r:6.3f}" if r is not None else "     -"

    print(f"\nbackward TFLOP/s on {result['device']} (commit {result['git_commit'][:12]})")
    print(f"{'dtype':8} {'d':>3} {'causal':6} {'seqlen':>6} | fwd+bwd: {'ours':>6} {'flash':>6} "
          f"{'cudnn':>6} {'/flash':>6} | bwd: {'ours':>6} {'det':>6} {'flash':>6} {'cudnn':>6} "
          f"{'/flash':>6} {'det/nd':>6} | maxdiff")
    for r in rows:
        t = r["tflops"]
        print(f"{r['dtype']:8} {r['head_dim']:3d} {str(r['causal']):6} {r['seqlen']:6d} | "
              f"         {fmt(t['flashattn_fwdbwd'])} {fmt(t.get('flash_fwdbwd'))} "
              f"{fmt(t.get('cudnn_fwdbwd'))} {ratio(t, 'flashattn_fwdbwd', 'flash_fwdbwd')} | "
              f"     {fmt(t['flashattn_bwd'])} {fmt(t['flashattn_bwd_det'])} {fmt(t.get('flash_bwd'))} "
              f"{fmt(t.get('cudnn_bwd'))} {ratio(t, 'flashattn_bwd', 'flash_bwd')} "
              f"{ratio(t, 'flashattn_bwd_det', 'flashattn_bwd')} | "
              f"{r.get('max_abs_diff_vs_flash', float('nan')):.2e}")
    print(f"gqa memory: {json.dumps(memory)}")


if __name__ == "__main__":
    main()
