#!/usr/bin/env python3
"""Checks ptxas's register-spill warnings in a build log against tools/spills.txt.

    python3 tools/check_spills.py BUILD_LOG [--list tools/spills.txt] [--warn-only] [--write]

The CUDA build compiles with -Xptxas=--warn-on-spills, so every kernel that spills says so in the
build's output. A kernel that spills more bytes (stores) than its line in the list allows, or that
is not listed, fails the check: a new spill is a decision, made by editing the list in the same
commit. Listed kernels that spilled less are reported so that the list can be tightened. Only what
the log's build compiled is checked (an incremental build compiles what changed). --write rewrites
the list from the log (keeping its header): from a full build of every architecture. --warn-only
reports without failing (a build for other architectures than the list's).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

WARNING = re.compile(r"Registers are spilled to local memory in function '([^']+)', "
                     r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def readable(mangled: list[str]) -> list[str]:
    """Demangled names without namespaces and parameters (the same across builds: the anonymous
    namespace's name carries a per-file hash)."""
    names = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True,
                           text=True, check=True).stdout.splitlines()
    out = []
    for name in names:
        name = re.sub(r"\(anonymous namespace\)::|flashattn::detail::cuda::|flashattn::detail::", "",
                      name)
        name = re.sub(r"^void ", "", name)
        name = re.sub(r"\((?:[^()]|\([^()]*\))*\)$", "", name)  # the parameter list
        out.append(name.strip())
    return out


def spills_in(log: str) -> dict[str, int]:
    """Kernel → the most bytes of spill stores it reported (over the compiled architectures)."""
    found = WARNING.findall(log)
    names = readable([m[0] for m in found])
    spills: dict[str, int] = {}
    for name, (_, stores, _) in zip(names, found):
        spills[name] = max(spills.get(name, 0), int(stores))
    return spills


def read_list(path: Path) -> tuple[list[str], dict[str, int]]:
    header, allowed = [], {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            if not allowed:
                header.append(line)
            continue
        count, name = line.split(" ", 1)
        allowed[name.strip()] = int(count)
    return header, allowed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log", type=Path, help="the build's output")
    ap.add_argument("--list", type=Path, default=Path(__file__).resolve().parent / "spills.txt")
    ap.add_argument("--warn-only", action="store_true", help="report, do not fail")
    ap.add_argument("--write", action="store_true", help="rewrite the list from the log")
    args = ap.parse_args()
    if not shutil.which("c++filt"):  # binutils, beside g++; the list holds demangled names
        print("check_spills: no c++filt here (binutils): spills not checked")
        return 0
    log = args.log.read_text(errors="replace")
    spills = spills_in(log)
    header, allowed = read_list(args.list)
    if args.write:
        lines = header + [f"{n} {k}" for k, n in sorted(spills.items(), key=lambda x: x[0])]
        args.list.write_text("\n".join(lines) + "\n")
        print(f"check_spills: {len(spills)} kernels written to {args.list}")
        return 0
    if not spills:
        print("check_spills: no spill warnings in this log")
        return 0
    new = {k: n for k, n in spills.items() if n > allowed.get(k, 0)}
    lower = {k: (n, allowed[k]) for k, n in spills.items() if k in allowed and n < allowed[k]}
    for k, n in sorted(new.items()):
        was = allowed.get(k)
        print(f"check_spills: NEW SPILL: {k}: {n} bytes of spill stores"
              + (f" (the list allows {was})" if was else " (not in the list)"))
    for k, (n, was) in sorted(lower.items()):
        print(f"check_spills: {k} spills {n} bytes, the list allows {was}: tighten the list")
    print(f"check_spills: {len(spills)} kernels spill, {len(new)} beyond {args.list.name}")
    if new and not args.warn_only:
        print(f"check_spills: remove the spill, or allow it in {args.list} (a measurement that it "
              "costs nothing, in the commit)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
