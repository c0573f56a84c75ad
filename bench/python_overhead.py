"""Call overhead of a tiny attention call from Python: flashattn against PyTorch SDPA.

    python bench/python_overhead.py [--device cuda|cpu] [--calls 200] [--repeats 30] [--out F]

The problem is tiny (batch 1, 1 head, seqlen 16, head dim 64; bf16 on the GPU, fp32 on the CPU),
so the time is the cost of getting from Python to the kernels, not the kernels. Two calls: a
forward (under torch.inference_mode) and a forward + backward (inputs requiring grad,
torch.autograd.grad). On the GPU a third: a decode step (--decode-keys, see decode_calls), with
the layers under flash_attn_with_kvcache timed one by one (ops.forward; the compiled module with
the scratch from the allocator callback, from the library's pool, and unsplit). Two measures,
each the median over `repeats` runs of `calls` calls, in µs per call:

* throughput: `calls` calls back to back, one synchronisation at the end (the host-side cost per
  call while the GPU keeps up: what a model's Python loop pays);
* latency: a synchronisation after every call (host cost + launch + kernels + sync).

Each round times every candidate in turn (so that drift weighs on all alike); the JSON has the
medians over the rounds and the minima.

SDPA is timed with its default backend choice and with FLASH and CUDNN forced, in its own
(batch, heads, seqlen, dim) layout prepared outside the timed loop. flashattn's forward is also
timed at the compiled module alone (`_ext.forward` on preallocated outputs, DLPack capsules in),
so that the note can say where the time goes. Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.dlpack import to_dlpack

import flashattn
from flashattn import _ext, flash_attn_func, flash_attn_with_kvcache, ops
from provenance import git_commit


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _block(fn, ctx, device, calls, sync_each):
    """µs per call of `calls` calls of fn under ctx (a synchronisation after each when
    sync_each, else one at the end)."""
    with ctx():
        start = time.perf_counter()
        for _ in range(calls):
            fn()
            if sync_each:
                _sync(device)
        _sync(device)
        return (time.perf_counter() - start) / calls * 1e6


def measure(candidates, device, calls, repeats):
    """{name: {throughput_us, latency_us, ...}}: medians (and minima) over `repeats` rounds. Each
    round times every candidate once, in turn, so that the machine's drift over the run (clocks,
    other tenants) weighs on all of them alike. A candidate that raises (a backend refusing the
    shape, an older flashattn) gets its error instead."""
    results, live = {}, {}
    for name, (fn, ctx) in candidates.items():
        try:
            _block(fn, ctx, device, max(10, calls // 10), False)  # warm-up
            live[name] = (fn, ctx)
        except (RuntimeError, TypeError) as e:
            results[name] = {"error": str(e).splitlines()[0][:200]}
    times = {name: {"throughput": [], "latency": []} for name in live}
    for _ in range(repeats):
        for name, (fn, ctx) in live.items():
            times[name]["throughput"].append(_block(fn, ctx, device, calls, False))
            times[name]["latency"].append(_block(fn, ctx, device, calls, True))
    for name, t in times.items():
        results[name] = {"throughput_us": statistics.median(t["throughput"]),
                         "latency_us": statistics.median(t["latency"]),
                         "throughput_min_us": min(t["throughput"]),
                         "latency_min_us": min(t["latency"])}
    return results


def decode_calls(keys):
    """A decode step (one query token, 32 query heads over 8 KV heads, d 128, bf16, batch 1,
    `keys` keys of cache) whose kernels take ~10 µs, so that back to back the time is the host's:
    flash_attn_with_kvcache, and below it the layers it goes through, beside SDPA (enable_gqa)
    and a bare torch.empty as the scale of one PyTorch op on this host."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 1, 32, 128, generator=gen).to("cuda", torch.bfloat16)
    kc, vc = (torch.randn(1, keys, 8, 128, generator=gen).to("cuda", torch.bfloat16)
              for _ in range(2))
    lens = torch.full((1,), keys, dtype=torch.int32, device="cuda")
    qt, kt, vt = (x.transpose(1, 2) for x in (q, kc, vc))
    out = torch.empty_like(q)
    stream = torch.cuda.current_stream().cuda_stream
    scale = 128 ** -0.5
    workspace = ops._workspace_allocator(q.get_device())

    def ext(workspace, num_splits=0):
        return lambda: _ext.forward(
            to_dlpack(q), to_dlpack(kc), to_dlpack(vc), to_dlpack(out), None,
            softmax_scale=scale, seqused_k=to_dlpack(lens), stream=stream,
            num_splits=num_splits, workspace=workspace)

    calls = {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt,
                                                                         enable_gqa=True),
        "flashattn.flash_attn_with_kvcache": lambda: flash_attn_with_kvcache(
            q, kc, vc, cache_seqlens=lens),
        "flashattn.flash_attn_with_kvcache[splits=1]": lambda: flash_attn_with_kvcache(
            q, kc, vc, cache_seqlens=lens, num_splits=1),
        "flashattn.ops.forward": lambda: ops.forward(
            q, kc, vc, scale, False, -1, -1, 0.0, 0.0, 0, None, None, None, 0, 0, lens, False),
        "flashattn._ext.forward": ext(workspace),
        "flashattn._ext.forward[library pool]": ext(None),
        "flashattn._ext.forward[splits=1]": ext(None, 1),
        "torch.empty": lambda: torch.empty(1 << 20, dtype=torch.uint8, device="cuda"),
    }
    ref = calls["sdpa"]().transpose(1, 2)
    torch.testing.assert_close(calls["flashattn.flash_attn_with_kvcache"](), ref, rtol=2e-2,
                               atol=2e-2)
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seqlen", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--decode-keys", type=int, default=4096,
                        help="keys of the decode step's cache (GPU only; 0: no decode group)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and flashattn.cuda_device_count() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shape = (1, args.seqlen, 1, args.head_dim)  # (batch, seqlen, heads, head_dim)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
    q_t, k_t, v_t = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # SDPA's layout
    out = torch.empty_like(q)
    lse = torch.empty((1, 1, args.seqlen), dtype=torch.float32, device=device)
    stream = torch.cuda.current_stream().cuda_stream if device == "cuda" else 0
    scale = args.head_dim ** -0.5

    fwd = {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q_t, k_t, v_t),
        "flashattn.flash_attn_func": lambda: flash_attn_func(q, k, v),
        # As the drop-in function calls it: DLPack capsules from torch.utils.dlpack.to_dlpack.
        "flashattn._ext.forward": lambda: _ext.forward(
            to_dlpack(q), to_dlpack(k), to_dlpack(v), to_dlpack(out), to_dlpack(lse),
            softmax_scale=scale, stream=stream),
    }
    qg, kg, vg, qg_t, kg_t, vg_t = (x.detach().requires_grad_() for x in (q, k, v, q_t, k_t, v_t))
    dout, dout_t = torch.randn_like(q), torch.randn_like(q_t)
    fwdbwd = {
        "sdpa": lambda: torch.autograd.grad(
            torch.nn.functional.scaled_dot_product_attention(qg_t, kg_t, vg_t), (qg_t, kg_t, vg_t),
            dout_t),
        "flashattn.flash_attn_func": lambda: torch.autograd.grad(
            flash_attn_func(qg, kg, vg), (qg, kg, vg), dout),
    }
    # Same answer before timing anything.
    ref = fwd["sdpa"]().transpose(1, 2)
    torch.testing.assert_close(fwd["flashattn.flash_attn_func"](), ref, rtol=2e-2, atol=2e-2)

    groups = [("forward", fwd, torch.inference_mode),
              ("forward_backward", fwdbwd, contextlib.nullcontext)]
    if device == "cuda" and args.decode_keys > 0:
        groups.append(("decode", decode_calls(args.decode_keys), torch.inference_mode))

    backends = {"": None}
    if device == "cuda":
        backends.update({"[flash]": SDPBackend.FLASH_ATTENTION, "[cudnn]": SDPBackend.CUDNN_ATTENTION})
    results = {}
    for group, fns, mode in groups:
        candidates = {}
        for name, fn in fns.items():
            for suffix, backend in backends.items() if name == "sdpa" else {"": None}.items():
                def ctx(mode=mode, backend=backend):
                    stack = contextlib.ExitStack()
                    stack.enter_context(mode())
                    if backend is not None:
                        stack.enter_context(sdpa_kernel(backend))
                    return stack
                candidates[name + suffix] = (fn, ctx)
        results[group] = measure(candidates, device, args.calls, args.repeats)
        sdpa = results[group]["sdpa"]
        for r in results[group].values():
            if "error" not in r:
                r["vs_sdpa_throughput"] = r["throughput_us"] / sdpa["throughput_us"]
                r["vs_sdpa_latency"] = r["latency_us"] / sdpa["latency_us"]
    report = {
        "benchmark": "python_overhead",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": str(dtype).split(".")[-1],
        "shape_bshd": list(shape),
        "decode": (f"1 query token, 32/8 heads, d 128, bf16, {args.decode_keys} keys"
                   if any(g[0] == "decode" for g in groups) else None),
        "calls": args.calls,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "flashattn": flashattn.__version__,
        "git_commit": git_commit(),
        "results_us": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
