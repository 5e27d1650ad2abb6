"""The documents point at tests and files that exist: a renamed test or a moved document must
not leave the docs naming something that is gone (security.md and control.md cite tests as
evidence for what they claim)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
TESTS = REPO / "tests"
REFERENCE = re.compile(r"(?:tests/)?(test_[a-z0-9_]+\.py)?::(test_[A-Za-z0-9_]+)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def defined_tests(path: Path) -> set[str]:
    return set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_cited_test_exists(doc: Path) -> None:
    every = {p.name: defined_tests(p) for p in TESTS.glob("test_*.py")}
    missing = []
    current = None  # "::name" after "file.py::other" refers to the same file
    for file, name in REFERENCE.findall(doc.read_text()):
        current = file or current
        where = [current] if current else list(every)
        if not any(name in every.get(f, ()) for f in where):
            missing.append(f"{current or '?'}::{name}")
    assert missing == [], f"{doc.name} cites tests that do not exist"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = [target for target in LINK.findall(doc.read_text())
              if "://" not in target and not (doc.parent / target).exists()]
    assert broken == [], f"{doc.name} links to missing files"
