#!/usr/bin/env python3
"""The benchmark of the path users call (DESIGN §6): flashattn's drop-in functions side by side
with PyTorch SDPA's FLASH (FlashAttention-2's kernels) and CUDNN backends, in one process.

Rows:
  * the sweep of FlashAttention's benchmarks: 16k tokens (batch = 16384 / seqlen), hidden 2048
    (heads = 2048 / head_dim), seqlen 512…16384, head dim 64/128/256, causal and not, bf16 and fp16;
  * options, bf16, d 128, seqlen 4096, batch 4, 16 heads: sliding window, softcap, ALiBi, dropout,
    GQA (16 query heads on 2 kv heads), a ragged varlen batch (flash_attn_varlen_func with
    max_seqlen given), each beside the SDPA backends where SDPA can express the same function;
  * decode (--no-decode skips it; the --decode-* options pick the grid, by default one query
    token, 32/8 heads, d 128, bf16, four batch × keys shapes): query tokens against a KV cache
    through flash_attn_with_kvcache (a contiguous cache, and the same cache in shuffled pages),
    beside SDPA with enable_gqa, in K + V bytes read per second, with the device-to-device copy
    rate of the same run; --decode-graph adds CUDA-graph replays.

Each row times forward, backward (autograd.grad on the forward's graph) and forward+backward,
inputs requiring grad as in training. Two timing modes:
  * sync: CUDA events around one call and a stream synchronisation after it, median of `reps`
    calls: what a user timing a call sees (host work before the GPU starts counts);
  * b2b: events around `reps` calls back to back, median of `trials`: the GPU-bound rate.
TFLOP/s: forward 4 · batch · heads · seqlen_q · seqlen_k · head_dim, halved when causal
(FlashAttention's formula); for a window or a varlen batch, 4 · head_dim · the visible (query, key)
pairs; backward 2.5×, forward+backward 3.5× that. Inputs are 64 MiB a tensor (larger than L2).

usage: bench.py [--json out.json] [--quick] [--no-options] [--no-sweep]
       [--head-dims 64,128] [--seqlens 512,1024] [--dtypes bfloat16] [--causal both|y|n]
       [--peers flash,cudnn]
Prints a table last; writes JSON (device, git commit, every number).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashattn
from flashattn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache
from provenance import git_commit

PEERS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
PASSES = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}


# ---- Timing ------------------------------------------------------------------------------------
def _events_ms(fn, calls: int) -> float:
    """ms per call: CUDA events around `calls` calls back to back, then a synchronisation."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls


def time_sync(fn, reps: int) -> float:
    """ms: median over `reps` calls of (event, call, event, synchronise)."""
    fn()
    torch.cuda.synchronize()
    return statistics.median(_events_ms(fn, 1) for _ in range(reps))


def time_b2b(fn, reps: int, trials: int) -> float:
    """ms per call: median over `trials` of events around `reps` calls back to back."""
    fn()
    torch.cuda.synchronize()
    return statistics.median(_events_ms(fn, reps) for _ in range(trials))


# ---- One row -----------------------------------------------------------------------------------
class Impl:
    """One implementation of a row: forward() returns out; the three passes as callables."""

    def __init__(self, forward, inputs, dout):
        self.forward, self.inputs, self.dout = forward, inputs, dout
        self.graph_out = None

    def fwd(self):
        return self.forward()

    def bwd(self):
        torch.autograd.grad(self.graph_out, self.inputs, self.dout, retain_graph=True)

    def fwdbwd(self):
        torch.autograd.grad(self.forward(), self.inputs, self.dout)

    def prepare_bwd(self):
        self.graph_out = self.forward()


def time_impl(impl: Impl, flops_fwd: float, reps: int, trials: int) -> dict:
    res = {}
    impl.prepare_bwd()
    for name, mult in PASSES.items():
        fn = getattr(impl, name)
        for mode in ("sync", "b2b"):
            ms = time_sync(fn, reps) if mode == "sync" else time_b2b(fn, max(2, reps // 3), trials)
            res[f"{name}_{mode}_ms"] = ms
            res[f"{name}_{mode}_tflops"] = mult * flops_fwd / ms / 1e9
    impl.graph_out = None
    return res


def sdpa_impl(q, k, v, dout, causal, backend, **kw) -> Impl:
    """SDPA on (batch, heads, seqlen, d) views of our (batch, seqlen, heads, d) tensors."""
    qt, kt, vt = (x.detach().transpose(1, 2).requires_grad_() for x in (q, k, v))
    dot = dout.transpose(1, 2)

    def forward():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, **kw)

    return Impl(forward, (qt, kt, vt), dot)


def run_row(row: dict, ours: Impl, peers: dict, flops_fwd: float, reps: int, trials: int,
            reference=None):
    """Times ours and each peer (a peer that refuses the shape gets its error recorded)."""
    row["flops_fwd"] = flops_fwd
    row["results"] = {"flashattn": time_impl(ours, flops_fwd, reps, trials)}
    out = ours.fwd()
    for name, impl in peers.items():
        try:
            if reference is not None and name == "flash":
                ref = impl.fwd().transpose(1, 2)
                row["max_abs_diff_vs_flash"] = (out.float() - ref.float()).abs().max().item()
            row["results"][name] = time_impl(impl, flops_fwd, reps, trials)
        except Exception as e:  # noqa: BLE001 - a backend may not support a shape
            row.setdefault("errors", {})[name] = str(e).splitlines()[0][:200]
    return row


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's geometric slopes (Press et al.): 2^(−8·(i + 1) / heads) for head i."""
    return torch.tensor([2 ** (-8 * (i + 1) / heads) for i in range(heads)], device="cuda")


def randn(*shape, dtype, device="cuda"):
    return torch.randn(*shape, dtype=dtype, device=device)


# ---- The sweep ---------------------------------------------------------------------------------
def sweep_rows(args):
    rows = []
    for dtype in args.dtypes:
        for d in args.head_dims:
            for causal in args.causals:
                for s in args.seqlens:
                    b, h = 16384 // s, 2048 // d
                    torch.manual_seed(0)
                    q, k, v = (randn(b, s, h, d, dtype=dtype).requires_grad_() for _ in range(3))
                    dout = randn(b, s, h, d, dtype=dtype)
                    flops = 4 * b * h * s * s * d / (2 if causal else 1)
                    ours = Impl(lambda: flash_attn_func(q, k, v, causal=causal), (q, k, v), dout)
                    peers = {n: sdpa_impl(q, k, v, dout, causal, be)
                             for n, be in args.peers.items()}
                    row = {"kind": "sweep", "dtype": str(dtype).replace("torch.", ""),
                           "head_dim": d, "causal": causal, "seqlen": s, "batch": b, "heads": h}
                    rows.append(run_row(row, ours, peers, flops, args.reps, args.trials,
                                        reference=True))
                    print(summary_line(row), flush=True)
                    del q, k, v, dout, ours, peers
                    torch.cuda.empty_cache()
    return rows


# ---- Options -----------------------------------------------------------------------------------
def visible_pairs(sq: int, sk: int, left: int, right: int) -> int:
    """(query, key) pairs a bottom-right aligned window (−1 = unbounded) lets through."""
    total = 0
    for i in range(sq):
        diag = i + sk - sq
        lo = 0 if left < 0 else max(0, diag - left)
        hi = sk - 1 if right < 0 else min(sk - 1, diag + right)
        total += max(0, hi - lo + 1)
    return total


def option_rows(args):
    dtype, d, s, b, h = torch.bfloat16, 128, 4096, 4, 16
    rows = []

    def base(name, **kw):
        return {"kind": "option", "option": name, "dtype": "bfloat16", "head_dim": d,
                "seqlen": s, "batch": b, "heads": h, **kw}

    torch.manual_seed(0)
    q, k, v = (randn(b, s, h, d, dtype=dtype).requires_grad_() for _ in range(3))
    dout = randn(b, s, h, d, dtype=dtype)
    full = 4 * b * h * s * s * d

    # Sliding window (Mistral's 4096 tokens at seqlen 4096 would be causal: 1024 here), causal.
    left = 1024
    pairs = visible_pairs(s, s, left, 0)
    ours = Impl(lambda: flash_attn_func(q, k, v, causal=True, window_size=(left, 0)), (q, k, v),
                dout)
    rows.append(run_row(base("window (1024, 0) causal"), ours, {}, 4 * b * h * d * pairs,
                        args.reps, args.trials))
    # Softcap (Gemma 2: 50), causal.
    ours = Impl(lambda: flash_attn_func(q, k, v, causal=True, softcap=50.0), (q, k, v), dout)
    rows.append(run_row(base("softcap 50 causal"), ours, {}, full / 2, args.reps, args.trials))
    # ALiBi, causal: SDPA has no slopes; a float mask would be a different (memory-bound) kernel.
    slopes = alibi_slopes(h)
    ours = Impl(lambda: flash_attn_func(q, k, v, causal=True, alibi_slopes=slopes), (q, k, v),
                dout)
    rows.append(run_row(base("alibi causal"), ours, {}, full / 2, args.reps, args.trials))
    # Dropout 0.1, causal: SDPA's backends take dropout_p too.
    ours = Impl(lambda: flash_attn_func(q, k, v, dropout_p=0.1, causal=True), (q, k, v), dout)
    peers = {n: sdpa_impl(q, k, v, dout, True, be, dropout_p=0.1)
             for n, be in args.peers.items()}
    rows.append(run_row(base("dropout 0.1 causal"), ours, peers, full / 2, args.reps,
                        args.trials))
    del q, k, v
    # GQA: 16 query heads on 2 kv heads, causal; SDPA with enable_gqa.
    q = randn(b, s, h, d, dtype=dtype).requires_grad_()
    k, v = (randn(b, s, 2, d, dtype=dtype).requires_grad_() for _ in range(2))
    ours = Impl(lambda: flash_attn_func(q, k, v, causal=True), (q, k, v), dout)
    peers = {n: sdpa_impl(q, k, v, dout, True, be, enable_gqa=True)
             for n, be in args.peers.items()}
    rows.append(run_row(base("gqa 16/2 causal", heads_kv=2), ours, peers, full / 2, args.reps,
                        args.trials))
    del q, k, v
    # Varlen: 8 sequences of ragged lengths (512…3584 tokens), causal, max_seqlen given. SDPA has no
    # varlen batch: its rows run the padded batch (8, max length), the work a user without
    # varlen does; every TFLOP/s counts the same useful FLOPs (the ragged batch's).
    gen = torch.Generator().manual_seed(0)
    lens = [int(x) for x in torch.randint(512, 3585, (8,), generator=gen)]
    total, smax = sum(lens), max(lens)
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32, device="cuda")
    qv, kv_, vv = (randn(total, h, d, dtype=dtype).requires_grad_() for _ in range(3))
    dv = randn(total, h, d, dtype=dtype)
    ours = Impl(lambda: flash_attn_varlen_func(qv, kv_, vv, cu, cu, smax, smax, causal=True),
                (qv, kv_, vv), dv)
    qp, kp, vp = (randn(len(lens), smax, h, d, dtype=dtype).requires_grad_() for _ in range(3))
    dp = randn(len(lens), smax, h, d, dtype=dtype)
    peers = {f"{n}_padded": sdpa_impl(qp, kp, vp, dp, True, be) for n, be in args.peers.items()}
    pairs = sum(visible_pairs(n, n, -1, 0) for n in lens)
    rows.append(run_row({"kind": "option", "option": "varlen ragged causal", "dtype": "bfloat16",
                         "head_dim": d, "heads": h, "seqlens": lens, "max_seqlen": smax},
                        ours, peers, 4 * h * d * pairs, args.reps, args.trials))
    for r in rows:
        print(summary_line(r), flush=True)
    return rows


# ---- Decode ------------------------------------------------------------------------------------
SHORT = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def capture_graph(fn, calls: int = 1):
    """A CUDA graph of `calls` calls of fn, captured after a warm-up call on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return graph


def time_graph(fn, calls: int, trials: int) -> float:
    """ms per call: replays of a CUDA graph of `calls` calls (capture_graph), median of `trials`:
    the rate of a serving engine that replays its decode step."""
    graph = capture_graph(fn, calls)
    graph.replay()
    torch.cuda.synchronize()
    return statistics.median(_events_ms(graph.replay, 1) for _ in range(trials)) / calls


def copy_tbps(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy rate of this GPU in this run: bytes read plus written per second."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_b2b(lambda: dst.copy_(src), 10, 5)
    del src, dst
    return 2 * nbytes / ms / 1e9


def profile_once(fns):
    """Each callable three times (warm-up), then once each between cudaProfilerStart and Stop, so
    that Nsight Compute (--profile-from-start off) profiles one call of each (bench/*_ncu.py)."""
    for fn in fns:
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for fn in fns:
        fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


def paged_copy(cache, page, gen):
    """cache (batch, keys, heads, d) as pages of `page` rows in a shuffled order (as a serving
    engine's allocator leaves them), and the block table."""
    b, s = cache.shape[:2]
    perm = torch.randperm(b * s // page, generator=gen).to("cuda")
    pages = torch.empty_like(cache).view(-1, page, *cache.shape[2:])
    pages[perm] = cache.view(-1, page, *cache.shape[2:])
    return pages, perm.view(b, s // page).to(torch.int32)


def decode_rows(args):
    """seqlen_q query tokens (1: a decode step; 4: speculative decoding) against a full KV cache,
    as a serving engine calls attention per layer and token: flash_attn_with_kvcache on the cache
    contiguous and in pages, beside SDPA (enable_gqa) on the same cache. The figure of merit is
    K + V bytes read per second; times back to back, synchronised and (--decode-graph) replayed
    from a CUDA graph."""
    rows = []
    for dtype, sq, (h, hk), d, (b, s) in itertools.product(
            args.decode_dtypes, args.decode_q, args.decode_heads, args.decode_dims,
            args.decode_shapes):
        nbytes = 2 * b * s * hk * d * torch.finfo(dtype).bits // 8
        if nbytes * (1 + len(args.decode_pages)) > args.decode_max_gb * 1e9:
            continue
        torch.manual_seed(0)
        q = randn(b, sq, h, d, dtype=dtype)
        kc, vc = randn(b, s, hk, d, dtype=dtype), randn(b, s, hk, d, dtype=dtype)
        lens = torch.full((b,), s, dtype=torch.int32, device="cuda")
        causal = sq > 1
        impls = {"flashattn": lambda: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens,
                                                              causal=causal)}
        paged = {}
        for page in args.decode_pages:
            if s % page:
                continue
            gen = torch.Generator().manual_seed(page)
            kp, table = paged_copy(kc, page, gen)
            vp, _ = paged_copy(vc, page, gen.manual_seed(page))
            paged[page] = (kp, vp, table)
            impls[f"flashattn_paged{page}"] = lambda kp=kp, vp=vp, table=table: \
                flash_attn_with_kvcache(q, kp, vp, cache_seqlens=lens, block_table=table,
                                        causal=causal)
        qt, kt, vt = (x.transpose(1, 2) for x in (q, kc, vc))
        # Bottom-right causal for sq > 1 (the query rows are the cache's last); made once, as a
        # serving engine would.
        mask = torch.ones(sq, s, dtype=torch.bool, device="cuda").tril(s - sq) if causal else None
        def sdpa():
            return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, enable_gqa=True)
        impls.update({name: sdpa for name in args.peers})  # the backend: around each timing
        row = {"kind": "decode",
               "option": f"decode {SHORT[dtype]} q{sq} h{h}/{hk} d{d} b{b} keys {s}",
               "dtype": str(dtype).removeprefix("torch."), "seqlen_q": sq, "batch": b,
               "seqlen_k": s, "heads": h, "heads_kv": hk, "head_dim": d, "kv_bytes": nbytes,
               "results": {}}
        with torch.inference_mode():
            for name, fn in impls.items():
                ctx = (sdpa_kernel(args.peers[name]) if name in args.peers
                       else contextlib.nullcontext())
                with ctx:
                    try:
                        r = {"sync_ms": time_sync(fn, args.reps),
                             "b2b_ms": time_b2b(fn, 50, args.trials)}
                    except Exception as e:  # noqa: BLE001 - a backend may not support a shape
                        row.setdefault("errors", {})[name] = str(e).splitlines()[0][:200]
                        continue
                    if args.decode_graph:
                        try:
                            r["graph_ms"] = time_graph(fn, 50, args.trials)
                        except Exception as e:  # noqa: BLE001 - a backend may not capture
                            r["graph_error"] = str(e).splitlines()[0][:200]
                for mode in ("sync", "b2b", "graph"):
                    if f"{mode}_ms" in r:
                        r[f"{mode}_tbps"] = nbytes / r[f"{mode}_ms"] / 1e9
                row["results"][name] = r
        rows.append(row)
        print(decode_line(row), flush=True)
        del q, kc, vc, qt, kt, vt, impls, paged
        torch.cuda.empty_cache()
    return rows


def decode_line(row) -> str:
    def one(r):
        graph = f"; graph {r['graph_tbps']:.2f}" if "graph_tbps" in r else ""
        return f"{r['b2b_tbps']:.2f} TB/s ({r['b2b_ms'] * 1e3:.0f} us; sync {r['sync_tbps']:.2f}{graph})"
    parts = [f"{name} {one(r)}" for name, r in row["results"].items()]
    return f"{row['option']:<44} | " + " | ".join(parts)


# ---- Output ------------------------------------------------------------------------------------
def ratio(row, peer, key):
    ours, other = row["results"]["flashattn"], row["results"].get(peer)
    return ours[key] / other[key] if other else None


def label(row) -> str:
    if row["kind"] == "sweep":
        return (f"{row['dtype']:8} d{row['head_dim']:<3} {'causal' if row['causal'] else 'full':6} "
                f"{row['seqlen']:5d}")
    return f"{row['option']:<29}"


def summary_line(row) -> str:
    def f(x):
        return f"{x:5.2f}" if x is not None else "    -"
    peer = "flash" if "flash" in row["results"] else "flash_padded"
    cudnn = "cudnn" if "cudnn" in row["results"] else "cudnn_padded"
    ours = row["results"]["flashattn"]
    return (f"{label(row)} | fwd {ours['fwd_sync_tflops']:5.0f} "
            f"/flash {f(ratio(row, peer, 'fwd_sync_tflops'))} {f(ratio(row, peer, 'fwd_b2b_tflops'))}"
            f" /cudnn {f(ratio(row, cudnn, 'fwd_sync_tflops'))} | fwd+bwd "
            f"{ours['fwdbwd_sync_tflops']:5.0f} /flash {f(ratio(row, peer, 'fwdbwd_sync_tflops'))} "
            f"{f(ratio(row, peer, 'fwdbwd_b2b_tflops'))} /cudnn "
            f"{f(ratio(row, cudnn, 'fwdbwd_sync_tflops'))} | bwd /flash "
            f"{f(ratio(row, peer, 'bwd_sync_tflops'))}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help="bf16, seqlen 512 and 4096 only")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--no-options", action="store_true")
    ap.add_argument("--no-decode", action="store_true", help="skip the KV-cache decode rows")
    ap.add_argument("--head-dims", default="64,128,256")
    ap.add_argument("--seqlens", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--causal", choices=("both", "y", "n"), default="both")
    ap.add_argument("--peers", default="flash,cudnn",
                    help="SDPA backends timed beside ours (empty: ours alone)")
    ap.add_argument("--decode-shapes", default="1x4096,1x65536,16x16384,64x16384",
                    help="decode rows: batch x keys in the cache")
    ap.add_argument("--decode-heads", default="32/8", help="decode rows: query/kv heads")
    ap.add_argument("--decode-dims", default="128", help="decode rows: head dims")
    ap.add_argument("--decode-q", default="1", help="decode rows: query tokens (4: speculative)")
    ap.add_argument("--decode-dtypes", default="bfloat16")
    ap.add_argument("--decode-pages", default="16",
                    help="decode rows: page sizes of the paged copies (empty: none)")
    ap.add_argument("--decode-graph", action="store_true",
                    help="decode rows: also time replays of a CUDA graph of 50 calls")
    ap.add_argument("--decode-max-gb", type=float, default=40.0,
                    help="decode rows: skip a shape whose caches take more")
    ap.add_argument("--reps", type=int, default=24, help="sync: calls timed (median)")
    ap.add_argument("--trials", type=int, default=5, help="b2b: trials of reps/3 calls (median)")
    args = ap.parse_args()
    args.head_dims = [int(x) for x in args.head_dims.split(",")]
    args.seqlens = [int(x) for x in args.seqlens.split(",")]
    args.dtypes = [getattr(torch, x) for x in args.dtypes.split(",")]
    try:
        args.peers = {n: PEERS[n] for n in args.peers.split(",") if n}
    except KeyError as e:
        ap.error(f"--peers: expected names from {sorted(PEERS)}, got {e}")
    args.causals = {"both": (False, True), "y": (True,), "n": (False,)}[args.causal]
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    args.decode_shapes = [tuple(int(v) for v in x.split("x")) for x in args.decode_shapes.split(",")]
    args.decode_heads = [tuple(int(v) for v in x.split("/")) for x in args.decode_heads.split(",")]
    args.decode_dims, args.decode_q = ints(args.decode_dims), ints(args.decode_q)
    args.decode_pages = ints(args.decode_pages)
    args.decode_dtypes = [getattr(torch, x) for x in args.decode_dtypes.split(",")]
    if args.quick:
        args.dtypes, args.seqlens = [torch.bfloat16], [512, 4096]
    if any(s < 1 or 16384 % s for s in args.seqlens):
        ap.error(f"--seqlens: expected divisors of 16384, got {args.seqlens}")

    rows = [] if args.no_sweep else sweep_rows(args)
    if not args.no_options:
        rows += option_rows(args)
    if not args.no_decode:
        rows += decode_rows(args)

    dev = torch.device("cuda")
    result = {
        "benchmark": "attention",
        "path": "flashattn.flash_attn_func / flash_attn_varlen_func / flash_attn_with_kvcache "
                "(the drop-in functions)",
        "device": torch.cuda.get_device_name(dev),
        "sm_count": torch.cuda.get_device_properties(dev).multi_processor_count,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "flashattn": flashattn.__version__,
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "timing": {"sync": f"events around one call, synchronise after it, median of {args.reps}",
                   "b2b": f"events around {max(2, args.reps // 3)} calls back to back, "
                          f"median of {args.trials}"},
        "flops": "fwd 4*b*h*sq*sk*d (/2 causal; window and varlen: 4*h*d*visible pairs); "
                 "bwd 2.5x, fwd+bwd 3.5x",
        "rows": rows,
    }
    if not args.no_decode:
        result["copy_tbps"] = copy_tbps()
        print(f"device-to-device copy: {result['copy_tbps']:.2f} TB/s (read + written)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))

    print(f"\nflashattn {result['git_commit'][:12]} on {result['device']}, torch {torch.__version__}"
          f", cuDNN {result['cudnn']}: ratios of TFLOP/s, ours / peer (sync | b2b)")
    for r in rows:
        print(decode_line(r) if r["kind"] == "decode" else summary_line(r))
    sweep = [r for r in rows if r["kind"] == "sweep"]
    for key in ("fwd_sync_tflops", "fwdbwd_sync_tflops", "fwd_b2b_tflops", "fwdbwd_b2b_tflops"):
        vals = [ratio(r, "flash", key) for r in sweep if ratio(r, "flash", key) is not None]
        if vals:
            below = sum(v < 1.0 for v in vals)
            print(f"sweep {key:20s} /flash: min {min(vals):.3f}, geomean "
                  f"{math.exp(sum(map(math.log, vals)) / len(vals)):.3f}, below 1.0: {below} "
                  f"of {len(vals)}")


if __name__ == "__main__":
    main()
