"""Every Python example of the README and docs/ runs, in order, as a reader would paste it.

Each file's examples share one namespace (like a notebook) and run in a folder holding a
patient folder ``pt_201``: the synthetic phantom, so that this test needs no real data.
Examples for 3D Slicer's own console (they use ``slicer``) need a real Slicer and are left out.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from DoseSegLib.io.phantom import write_phantom_patient

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _examples(path: Path) -> list[str]:
    return [code for code in BLOCK.findall(path.read_text())
            if not re.search(r"^\s*import slicer|\bslicer\.", code, re.M)]


def test_the_docs_have_examples() -> None:
    assert _examples(REPO / "README.md") and _examples(REPO / "docs" / "console_api.md")


@pytest.mark.parametrize("doc", [d for d in DOCS if _examples(d)], ids=lambda d: d.name)
def test_examples_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_phantom_patient(tmp_path / "pt_201")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for index, code in enumerate(_examples(doc)):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                exec(compile(code, f"{doc.name} example {index + 1}", "exec"), namespace)
            except Exception as exc:  # the failing example, named
                pytest.fail(f"{doc.name} example {index + 1} fails: {type(exc).__name__}: {exc}\n{code}")
