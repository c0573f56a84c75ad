#!/usr/bin/env python3
"""Turns bench/bench.py's JSON into the charts and the tables of docs/performance.md.

    python bench/report.py bench/results/bench_h200_<commit>.json \
        [--overhead bench/results/python_overhead_h200_<commit>.json] \
        [--profile bench/results/host_profile_h200_<commit>.json] \
        [--decode bench/results/bench_decode_h200_<commit>_<grid>.json ...] \
        [--options bench/results/bench_options_h200_<commit>.json] \
        [--head-dims bench/results/bench_headdims_h200_<commit>.json] [--docs docs]

Writes docs/perf_<pass>_<dtype>.png (TFLOP/s against seqlen, flashattn beside SDPA's FLASH and
CUDNN backends, one panel per head dim and mask; pass = fwd, bwd, fwdbwd; a synchronisation after
every call, the mode users see), docs/decode_<name>.png for each --decode file (K + V TB/s of
every decode row, replayed from a CUDA graph, beside the copy rate of the run) and
docs/performance.md, which is generated: edit this script, not the page. Needs matplotlib (only
this script does).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

PASS_NAMES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}
IMPLS = (("flashattn", "flashattn", "#d62728"),
         ("flash", "SDPA FLASH (FlashAttention-2)", "#1f77b4"),
         ("cudnn", "SDPA CUDNN", "#7f7f7f"))


def sweep(rows, dtype=None):
    return [r for r in rows if r["kind"] == "sweep" and (dtype is None or r["dtype"] == dtype)]


def tflops(row, impl, key):
    res = row["results"].get(impl)
    return res[key] if res else None


def ratio(row, peer, key):
    ours, other = tflops(row, "flashattn", key), tflops(row, peer, key)
    return ours / other if ours and other else None


# ---- Charts ------------------------------------------------------------------------------------
def plot(bench: dict, docs: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    dtypes = sorted({r["dtype"] for r in sweep(bench["rows"])})
    head_dims = sorted({r["head_dim"] for r in sweep(bench["rows"])})
    for dtype in dtypes:
        rows = sweep(bench["rows"], dtype)
        for pass_, pass_name in PASS_NAMES.items():
            key = f"{pass_}_sync_tflops"
            fig, axes = plt.subplots(2, len(head_dims), figsize=(4.2 * len(head_dims), 6.4),
                                     sharey=True, squeeze=False)
            for i, causal in enumerate((False, True)):
                for j, d in enumerate(head_dims):
                    ax = axes[i][j]
                    cell = sorted((r for r in rows if r["head_dim"] == d and r["causal"] == causal),
                                  key=lambda r: r["seqlen"])
                    seqlens = [r["seqlen"] for r in cell]
                    width = 0.8 / len(IMPLS)
                    for n, (impl, label, color) in enumerate(IMPLS):
                        values = [tflops(r, impl, key) or 0.0 for r in cell]
                        xs = [x + (n - 1) * width for x in range(len(cell))]
                        bars = ax.bar(xs, values, width, label=label, color=color)
                        if impl == "flashattn":
                            ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
                    ax.set_xticks(range(len(cell)), [f"{s // 1024}k" if s >= 1024 else str(s)
                                                     for s in seqlens])
                    ax.set_title(f"d {d}, {'causal' if causal else 'no mask'}", fontsize=10)
                    ax.grid(axis="y", alpha=0.3)
                    if j == 0:
                        ax.set_ylabel("TFLOP/s")
                    if i == 1:
                        ax.set_xlabel("seqlen (16k tokens a batch)")
            handles, labels = axes[0][0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", ncol=len(IMPLS), fontsize=9)
            fig.suptitle(f"{pass_name}, {dtype}, on an {bench['device']} (flashattn "
                         f"{bench['git_commit'][:7]}, torch {bench['torch']}, cuDNN "
                         f"{bench['cudnn']}): synchronised calls through flash_attn_func",
                         fontsize=10)
            fig.tight_layout(rect=(0, 0.04, 1, 1))
            path = docs / f"perf_{pass_}_{dtype}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written


# ---- Tables ------------------------------------------------------------------------------------
def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def row_label(r):
    if r["kind"] == "sweep":
        return f"{r['dtype']} | {r['head_dim']} | {'yes' if r['causal'] else 'no'} | {r['seqlen']}"
    return r["option"]


def pass_table(rows, pass_, sweep_rows: bool) -> list[str]:
    head = "| dtype | d | causal | seqlen |" if sweep_rows else "| option |"
    out = [head + " flashattn TFLOP/s (sync) | / FLASH sync | / FLASH b2b | / CUDNN sync | "
                  "/ CUDNN b2b | flashattn TFLOP/s (b2b) |",
           "|" + "---|" * (head.count("|") - 1 + 6)]
    for r in rows:
        flash = "flash" if "flash" in r["results"] else "flash_padded"
        cudnn = "cudnn" if "cudnn" in r["results"] else "cudnn_padded"
        s, b = f"{pass_}_sync_tflops", f"{pass_}_b2b_tflops"
        out.append(f"| {row_label(r)} | {fmt(tflops(r, 'flashattn', s), 0)} | "
                   f"{fmt(ratio(r, flash, s))} | {fmt(ratio(r, flash, b))} | "
                   f"{fmt(ratio(r, cudnn, s))} | {fmt(ratio(r, cudnn, b))} | "
                   f"{fmt(tflops(r, 'flashattn', b), 0)} |")
    return out


def summary(rows) -> list[str]:
    out = ["| pass | timing | ours / FLASH: min | geomean | rows below 1.0 | ours / CUDNN: min | "
           "geomean |", "|---|---|---|---|---|---|---|"]
    for pass_, name in PASS_NAMES.items():
        for mode in ("sync", "b2b"):
            key = f"{pass_}_{mode}_tflops"
            vs_flash = [x for x in (ratio(r, "flash", key) for r in rows) if x]
            vs_cudnn = [x for x in (ratio(r, "cudnn", key) for r in rows) if x]
            if not vs_flash:
                continue
            below = sum(x < 1.0 for x in vs_flash)
            out.append(f"| {name} | {mode} | {min(vs_flash):.2f} | {geomean(vs_flash):.2f} | "
                       f"{below} of {len(vs_flash)} | {fmt(min(vs_cudnn) if vs_cudnn else None)} | "
                       f"{fmt(geomean(vs_cudnn) if vs_cudnn else None)} |")
    return out


def below_one(rows) -> list[str]:
    """The sweep's rows where ours is slower than FLASH, per pass and timing."""
    out = []
    for pass_, name in PASS_NAMES.items():
        for mode in ("sync", "b2b"):
            key = f"{pass_}_{mode}_tflops"
            slow = [f"{r['dtype']} d{r['head_dim']} {'causal' if r['causal'] else 'no mask'} "
                    f"{r['seqlen']} ({ratio(r, 'flash', key):.2f})"
                    for r in rows if ratio(r, "flash", key) is not None
                    and ratio(r, "flash", key) < 1.0]
            if slow:
                out.append(f"- {name}, {mode}: " + "; ".join(slow))
    return out


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def overhead_table(report: dict) -> list[str]:
    out = ["| call | implementation | µs per call, back to back | µs per call, synchronised |",
           "|---|---|---|---|"]
    names = {"forward": "tiny forward (inference mode)", "forward_backward": "tiny fwd + bwd",
             "decode": "decode step (inference mode)"}
    for group, rows in report["results_us"].items():
        for impl, v in rows.items():
            if "error" in v:
                continue
            out.append(f"| {names.get(group, group)} | {impl} | {v['throughput_us']:.1f} | "
                       f"{v['latency_us']:.1f} |")
    return out


def profile_table(report: dict) -> list[str]:
    keys = ("wall_us", "to_first_kernel_us", "gpu_busy_us", "after_last_kernel_us")
    out = ["| implementation | " + " | ".join(k.replace("_us", "").replace("_", " ") + " (µs)"
                                             for k in keys) + " |",
           "|---|" + "---|" * len(keys)]
    for impl in ("flashattn", "sdpa_flash"):
        m = report[impl]["median_per_iteration"]
        out.append(f"| {impl} | " + " | ".join(f"{m[k]:.1f}" for k in keys) + " |")
    return out


def decode_rows(bench: dict) -> list:
    return [r for r in bench["rows"] if r["kind"] == "decode"]


def plot_decode(bench: dict, name: str, docs: Path) -> Path:
    """One horizontal bar a (row, implementation): K + V TB/s replayed from a CUDA graph (back to
    back where no graph was timed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = decode_rows(bench)
    impls = sorted({i for r in rows for i in r["results"]},
                   key=lambda i: (i != "flashattn", not i.startswith("flashattn"), i))
    colours = {"flashattn": "#d62728", "flash": "#1f77b4", "cudnn": "#7f7f7f"}
    paged_colours = iter(("#ff9896", "#ff7f0e", "#bcbd22"))
    colours.update({i: next(paged_colours, None) for i in impls if i.startswith("flashattn_")})
    height = 0.8 / len(impls)
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) * len(impls) / 2 + 1.5))
    for k, impl in enumerate(impls):
        ys, xs = [], []
        for i, r in enumerate(rows):
            v = r["results"].get(impl)
            if v:
                ys.append(i + k * height)
                xs.append(v.get("graph_tbps", v["b2b_tbps"]))
        ax.barh(ys, xs, height=height, label=impl, color=colours.get(impl))
    if "copy_tbps" in bench:
        ax.axvline(bench["copy_tbps"], color="black", linestyle="--", linewidth=1,
                   label=f"device copy {bench['copy_tbps']:.2f} (read + written)")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
    ax.set_yticklabels([r["option"].removeprefix("decode ") for r in rows], fontsize=7)
    ax.invert_yaxis()
    graphs = any("graph_tbps" in v for r in rows for v in r["results"].values())
    ax.set_xlabel("K + V read, TB/s (" + ("CUDA graph replay" if graphs else "back to back") + ")")
    ax.set_title(f"Decode through flash_attn_with_kvcache, {bench['device']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3)
    fig.tight_layout()
    path = docs / f"decode_{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def decode_section(bench: dict, path: Path, chart) -> list:
    rows = decode_rows(bench)
    if not rows:
        return []
    lines = ["## Decode (KV cache)" + (f": `{path.as_posix()}`" if path else ""), "",
             "Query tokens against a full KV cache through `flash_attn_with_kvcache` (the cache "
             "contiguous, and in shuffled pages: flashattn_pagedN), beside SDPA with `enable_gqa` "
             "(its backend chosen around the timing, not inside each call; SDPA FLASH takes no "
             "mask, so it has no rows of several query tokens, which are causal): K + V bytes read "
             "per second, back to back (50 calls), synchronised, and replayed from a CUDA graph "
             "where measured."
             + (f" A device-to-device copy moved {bench['copy_tbps']:.2f} TB/s (read + written) "
                "in the same run." if "copy_tbps" in bench else "")
             + (f" {bench['device']}, flashattn at `{bench['git_commit'][:12]}`."
                if path else ""), ""]
    if chart is not None:
        lines += [f"![{chart.stem}]({chart.name})", ""]
    lines += ["| row | implementation | TB/s, back to back | µs a call | TB/s, sync | TB/s, graph |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        for impl, v in r["results"].items():
            graph = f"{v['graph_tbps']:.2f}" if "graph_tbps" in v else "—"
            lines.append(f"| {r['option'].removeprefix('decode ')} | {impl} | "
                         f"{v['b2b_tbps']:.2f} | {v['b2b_ms'] * 1e3:.0f} | "
                         f"{v['sync_tbps']:.2f} | {graph} |")
    return lines + [""]


def head_dims_section(source: dict, path: Path) -> list[str]:
    """The sweep's rows of a run at other head dims (bench.py --head-dims 32,96,…)."""
    dims = sorted({r["head_dim"] for r in sweep(source["rows"])})
    lines = ["## Other head dims", "",
             f"`bench/bench.py --head-dims {','.join(map(str, dims))}`, apart from the sweep: "
             f"flashattn at `{source['git_commit'][:12]}`, {source['time'][:10]}, "
             f"{source['device']}, torch {source['torch']}, cuDNN {source['cudnn']}; every number "
             f"is in `{path.as_posix()}`. On Hopper these head dims run the wgmma kernels padded "
             "to the next of 64, 128 and 256 (the forward at d 32 runs the sm80 kernel).", ""]
    for pass_, name in PASS_NAMES.items():
        lines += [f"### {name[0].upper() + name[1:]}", "", *pass_table(sweep(source["rows"]), pass_,
                                                                       True), ""]
    return lines


def page(bench: dict, bench_path: Path, charts, overhead=None, overhead_path=None, profile=None,
         profile_path=None, decode_sources=(), options_source=None, head_dims=None) -> str:
    """decode_sources: (bench JSON, its path, its chart) of the decode rows; the main JSON's own
    decode rows come first (path None). options_source: (bench JSON, its path) whose option rows
    replace the main JSON's (a later run of the option rows alone). head_dims: (bench JSON, its
    path) of a sweep at other head dims."""
    rows = bench["rows"]
    lines = [
        "# Performance",
        "",
        "<!-- Generated by bench/report.py from the JSON named below: edit the script, not this page. -->",
        "",
        f"Measured on one {bench['device']} ({bench['sm_count']} SMs), torch {bench['torch']}, "
        f"CUDA {bench['cuda']}, cuDNN {bench['cudnn']}, flashattn at `{bench['git_commit'][:12]}`, "
        f"{bench['time'][:10]}, by `bench/bench.py` (the `bench` step of `tools/gpu_check.sh`); "
        f"every number is in `{bench_path.as_posix()}`.",
        "",
        "Through the path users call: `flashattn.flash_attn_func` (and `flash_attn_varlen_func`), "
        "inputs requiring grad, beside PyTorch SDPA's FLASH backend (FlashAttention-2's kernels) "
        "and its CUDNN backend, in one process on the same tensors. Two timings: **sync**, CUDA "
        "events around one call and a stream synchronisation after it (median of "
        f"{bench['timing']['sync'].split('median of ')[-1]} calls; host work before the GPU "
        "starts counts), and **b2b**, events around calls back to back (the GPU-bound rate). "
        f"FLOPs: {bench['flops']}. The sweep is FlashAttention's: 16k tokens a batch "
        "(batch = 16384 / seqlen), hidden 2048 (heads = 2048 / d). Ratios are ours / peer, of "
        "TFLOP/s: above 1.0 is faster.",
        "",
        "## Summary (the sweep)",
        "",
        *summary(sweep(rows)),
        "",
        "Rows below 1.0× FLASH:",
        "",
        *below_one(sweep(rows)),
        "",
    ]
    for path in charts:
        lines += [f"![{path.stem}]({path.name})", ""]
    for pass_, name in PASS_NAMES.items():
        lines += [f"## {name[0].upper() + name[1:]}", "", *pass_table(sweep(rows), pass_, True), ""]
    options = [r for r in rows if r["kind"] == "option"]
    measured = ""
    if options_source is not None:
        source, path = options_source
        options = [r for r in source["rows"] if r["kind"] == "option"]
        measured = (f"Measured apart from the sweep: flashattn at `{source['git_commit'][:12]}`, "
                    f"{source['time'][:10]}, {source['device']}, torch {source['torch']}, cuDNN "
                    f"{source['cudnn']}; every number is in `{path.as_posix()}`. ")
    if options:
        lines += ["## Options", "",
                  measured +
                  "bf16, d 128, seqlen 4096, batch 4, 16 heads, causal. Window and varlen FLOPs "
                  "count the visible (query, key) pairs. SDPA has no window, softcap or ALiBi "
                  "(its rows are empty there); for the ragged varlen batch SDPA runs the padded "
                  "batch, the work a user without varlen does.", ""]
        for pass_, name in PASS_NAMES.items():
            lines += [f"### {name[0].upper() + name[1:]}", "", *pass_table(options, pass_, False),
                      ""]
    if head_dims is not None:
        lines += head_dims_section(*head_dims)
    for source, path, chart in decode_sources:
        lines += decode_section(source, path, chart)
    if overhead is not None:
        shape = "×".join(str(x) for x in overhead["shape_bshd"])
        lines += ["## Call overhead", "",
                  f"`bench/python_overhead.py`: a tiny call ({shape} (batch, seqlen, heads, d), "
                  f"{overhead['dtype']}), whose time is the way from Python to the kernels, and "
                  f"a decode step ({overhead.get('decode', 'none')}) whose kernels take less than "
                  f"its host path, with the layers below flash_attn_with_kvcache; median "
                  f"of {overhead['repeats']} runs of {overhead['calls']} calls. "
                  f"`{overhead_path.as_posix()}`.", "", *overhead_table(overhead), ""]
    if profile is not None:
        c = profile["case"]
        lines += ["## Host time of a synchronised call", "",
                  f"`bench/host_profile.py` (torch.profiler): {c['pass']}, {c['dtype']}, batch "
                  f"{c['batch']}, seqlen {c['seqlen']}, {c['heads']} heads, d {c['head_dim']}, "
                  f"{'causal' if c['causal'] else 'no mask'}; medians per iteration of (call, "
                  f"synchronise). `{profile_path.as_posix()}`.", "", *profile_table(profile), ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", type=Path, help="bench/bench.py's JSON")
    ap.add_argument("--overhead", type=Path, help="bench/python_overhead.py's JSON")
    ap.add_argument("--profile", type=Path, help="bench/host_profile.py's JSON")
    ap.add_argument("--decode", type=Path, nargs="*", default=[],
                    help="bench/bench.py JSON files of decode rows (--no-sweep --no-options)")
    ap.add_argument("--options", type=Path,
                    help="a bench/bench.py JSON of option rows (--no-sweep --no-decode) that "
                         "replace the main JSON's")
    ap.add_argument("--head-dims", type=Path,
                    help="a bench/bench.py JSON of the sweep at other head dims (--head-dims "
                         "32,96,… --no-options --no-decode)")
    ap.add_argument("--docs", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    args = ap.parse_args()
    bench = json.loads(args.bench.read_text())
    overhead = json.loads(args.overhead.read_text()) if args.overhead else None
    profile = json.loads(args.profile.read_text()) if args.profile else None
    charts = plot(bench, args.docs)
    decode_sources = [(bench, None, None)]
    for path in args.decode:
        source = json.loads(path.read_text())
        name = path.stem.removeprefix("bench_decode_")
        decode_sources.append((source, path, plot_decode(source, name, args.docs)))
    options_source = None
    if args.options:
        options_source = (json.loads(args.options.read_text()), args.options)
    head_dims = None
    if args.head_dims:
        head_dims = (json.loads(args.head_dims.read_text()), args.head_dims)
    text = page(bench, args.bench, charts, overhead, args.overhead, profile, args.profile,
                decode_sources, options_source, head_dims)
    (args.docs / "performance.md").write_text(text + "\n")
    print(f"report: {len(charts)} charts and performance.md in {args.docs}")


if __name__ == "__main__":
    main()
