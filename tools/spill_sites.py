#!/usr/bin/env python3
"""Where each kernel's register spills sit in its machine code: inside a loop (run once a
main-loop step, or more) or outside every loop (run once a tile: prologue, epilogue).

Reads the SASS of a CUDA object or library (cuobjdump -sass) and, for every kernel with spill
stores or loads (STL/LDL), counts those outside every loop, inside a loop, and the instructions
inside loops in all (a loop: the addresses from a backward branch's target to the branch). A
spill outside every loop costs a few local-memory accesses a thread block; one inside the main
loop costs them every step, and is the kind that tools/spills.txt should not keep.

    python3 tools/spill_sites.py build/release/libflashattn.a [--arch sm_90a] [--cuobjdump PATH]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

FUNC = re.compile(r"^\s*Function : (\S+)")
INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
BRANCH = re.compile(r"\b(?:BRA|BRX)\b[^0-9]*0x([0-9a-f]+)")


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                             check=True).stdout.splitlines()
        return out if len(out) == len(names) else names
    except (OSError, subprocess.CalledProcessError):
        return names


def short(name: str) -> str:
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"flashattn::detail::cuda::(sm90::)?", r"\1", name)
    name = re.sub(r"\(.*\)$", "", name)
    return name.replace("(anonymous namespace)::", "")


def kernels(sass: str):
    """(arch, mangled name, [(address, instruction)]) for every function of the dump."""
    arch, name, body = None, None, []
    for line in sass.splitlines():
        m = re.search(r"arch = (sm_\w+)", line)
        if m:
            arch = m.group(1)
        m = FUNC.match(line)
        if m:
            if name:
                yield arch, name, body
            name, body = m.group(1), []
            continue
        m = INSN.search(line)
        if m and name:
            body.append((int(m.group(1), 16), m.group(2)))
    if name:
        yield arch, name, body


def sites(body):
    loops = []
    for addr, insn in body:
        m = BRANCH.search(insn)
        if m and int(m.group(1), 16) <= addr:
            loops.append((int(m.group(1), 16), addr))
    in_loop = lambda a: any(lo <= a <= hi for lo, hi in loops)  # noqa: E731
    spill = [(a, i) for a, i in body if re.search(r"\b(STL|LDL)\b", i)]
    inside = sum(in_loop(a) for a, _ in spill)
    loop_insns = sum(in_loop(a) for a, _ in body)
    return len(spill) - inside, inside, loop_insns


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--arch", help="only this SASS architecture (e.g. sm_90a)")
    ap.add_argument("--cuobjdump", default=shutil.which("cuobjdump") or "cuobjdump")
    args = ap.parse_args()
    sass = subprocess.run([args.cuobjdump, "-sass", args.file], capture_output=True, text=True,
                          check=True).stdout
    rows = []
    for arch, name, body in kernels(sass):
        if args.arch and arch != args.arch:
            continue
        outside, inside, loop_insns = sites(body)
        if outside + inside:
            rows.append((arch, name, outside, inside, loop_insns))
    names = demangle([r[1] for r in rows])
    seen = set()
    print(f"{'arch':8} {'outside':>7} {'in loop':>7} {'loop insns':>10}  kernel")
    for (arch, _, outside, inside, loop_insns), name in sorted(zip(rows, names),
                                                                key=lambda r: short(r[1])):
        key = (arch, short(name))
        if key in seen:
            continue
        seen.add(key)
        print(f"{arch or '?':8} {outside:7} {inside:7} {loop_insns:10}  {short(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
