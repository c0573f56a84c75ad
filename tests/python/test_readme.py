"""The README's Python snippets run as printed; the one that downloads a model is compiled only."""

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
DOWNLOADS = [b for b in BLOCKS if "from_pretrained" in b]
RUNNABLE = [b for b in BLOCKS if b not in DOWNLOADS]


def test_readme_has_python_snippets():
    assert RUNNABLE and DOWNLOADS, f"found {len(BLOCKS)} python blocks in {README}"


@pytest.mark.parametrize("code", RUNNABLE, ids=lambda c: c.splitlines()[0][:40])
def test_readme_snippet_runs(code):
    exec(compile(code, str(README), "exec"), {})


@pytest.mark.parametrize("code", DOWNLOADS, ids=lambda c: c.splitlines()[0][:40])
def test_readme_download_snippet_compiles(code):
    compile(code, str(README), "exec")
