"""The documentation site's examples run.

A ```python block of `docs/**/*.md` directly after the line `<!-- test -->` is runnable:
the runnable blocks of a page run in order, in one namespace, in a fresh folder (cheap ones
only: tiny random data). `<!-- test: slow -->` marks a block that takes more than a few
seconds (the test of its page is then marked slow). Blocks without a marker are shown, not
run (real data, long training, shell commands).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import require

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^<!-- test(?P<slow>: slow)? -->\n```python\n(?P<code>.*?)^```", re.M | re.S)
NEEDS = {"keras_tuner": "keras_tuner"}  # a block importing it is skipped without it


def runnable(page: Path) -> list[tuple[str, bool]]:
    return [(m["code"], bool(m["slow"])) for m in BLOCK.finditer(page.read_text())]


PAGES = sorted(p for p in DOCS.rglob("*.md") if runnable(p))


def _param(page: Path):
    slow = any(is_slow for _, is_slow in runnable(page))
    marks = [pytest.mark.slow] if slow else []
    return pytest.param(page, id=str(page.relative_to(DOCS)), marks=marks)


def test_the_marker_is_used():
    # Guards against the examples being silently turned off (e.g. a changed marker).
    names = {str(p.relative_to(DOCS)) for p in PAGES}
    assert {"index.md", "guides/callback.md", "guides/evaluation.md"} <= names, names


@pytest.mark.parametrize("page", [_param(p) for p in PAGES])
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict = {"__name__": "__docs__"}
    for index, (code, _) in enumerate(runnable(page)):
        for module, package in NEEDS.items():
            if re.search(rf"^import {module}\b|^from {module}\b", code, re.M):
                require(package)
        exec(compile(code, f"{page.name} block {index}", "exec"), namespace)
