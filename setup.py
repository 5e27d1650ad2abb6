"""Build hook: the wheel carries the repository's firmware/ and boards/ as package data.

They stay at the top of the repository (the docs and users name them there); at build time they
are copied into fieldnode/_data/, where fieldnode.infra.paths finds them in an installed package.
Everything else about the package is in pyproject.toml."""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_TREES = ("firmware", "boards")


class BuildPyWithProjectData(build_py):
    def run(self) -> None:
        super().run()
        # An editable install runs from the checkout, which paths.py reads directly.
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED_TREES:
            shutil.copytree(ROOT / name, Path(self.build_lib) / "fieldnode" / "_data" / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithProjectData})
