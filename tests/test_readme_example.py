"""The README's library example runs as written (in a scratch directory) and does what it says."""

from __future__ import annotations

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", text, re.S)
    assert m, f"README has no example marked {name}"
    return m.group(1)


def test_library_example_runs(tmp_path, capsys):
    code = _example("library")
    old = os.getcwd()
    os.chdir(tmp_path)
    ns = {"__name__": "readme"}
    try:
        exec(compile(code, "README.md", "exec"), ns)
    finally:
        os.chdir(old)
    printed = capsys.readouterr().out
    m = re.search(r"sparsity (\S+), (\d+) int8 layers, perplexity (\S+)", printed)
    assert m and abs(float(m.group(1)) - 0.5) < 0.01 and int(m.group(2)) > 0 and float(m.group(3)) > 1
    import torch

    import slimlm

    again = slimlm.load(str(tmp_path / "out" / "tiny-wanda-int8"))  # what the comment promises
    ids = torch.randint(0, 200, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(again.hf(ids).logits, ns["model"].hf(ids).logits)
