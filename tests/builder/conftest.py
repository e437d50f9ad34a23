"""Fixtures for engine tests: write small recipes into a temporary project tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

MINROOT = Path(__file__).with_name("minroot.py")


class RecipeTree:
    """A throw-away project: recipes/NAME.yaml and its macrostep files."""

    def __init__(self, root: Path):
        self.root = root
        self.recipes = root / "recipes"
        self.recipes.mkdir(parents=True)
        self.workdir_base = root / "work"

    def write(self, name: str, text: str) -> Path:
        path = self.recipes / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def recipe(self, steps: str, extra_globals: str = "", name: str = "r.yaml") -> Path:
        body = textwrap.dedent(f"""\
            global:
              distrib: test
              arch: amd64
              output: tgz
              workdir_base: {self.workdir_base}
            """) + textwrap.indent(textwrap.dedent(extra_globals), "  ") + "steps:\n" + \
            textwrap.indent(textwrap.dedent(steps).strip("\n") + "\n", "  ")
        path = self.recipes / name
        path.write_text(body)
        return path

    def minroot_step(self, name: str = "bootstrap") -> None:
        """A macrostep that fills the appliance with bash and coreutils from the host."""
        self.write(f"{name}.yaml", f"""
            - populate:
                - exec_current: python3 {MINROOT} $$workdir
            """)


@pytest.fixture
def tree(tmp_path: Path) -> RecipeTree:
    return RecipeTree(tmp_path / "project")
