"""The commit that a benchmark's JSON names (imported by the scripts beside it)."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The full commit, from .commit where it exists (written before a copy of the tree goes to a
    GPU machine, whose copy has no .git), else from git, with "+dirty" for uncommitted changes to
    the code; "unknown" when neither can tell."""
    marker = ROOT / ".commit"
    if marker.is_file():
        return marker.read_text().strip()
    try:
        head = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
        dirty = subprocess.call(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "src",
                                 "include", "python"]) != 0
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
