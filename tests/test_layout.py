"""The house's dependency rule, read from the code: each package imports only what lies below it.

    boot (runs on a booted machine: processes, files, kernel line, console, PXE)
      <- autoconf (the on-boot agent)
      <- builder (build-iso, host only)      boot.vcluster (oar-vcluster, host only)

`boot` outside `boot.vcluster` is what every booted machine runs below the agent and imports
no other package; `autoconf` imports `boot`; the host-only programs (`builder`,
`boot.vcluster`) import `boot` but never the agent. No module imports another inside a
function (a lazy import hides a cycle), and no two modules import each other, even through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("builder", "autoconf", "boot")

# What each part may import (besides itself), most specific part first.
ALLOWED = {
    "boot.vcluster": {"boot"},
    "boot": set(),
    "autoconf": {"boot"},
    "builder": {"boot"},
}
HOST_ONLY = ("boot.vcluster",)


def part_of(module: str) -> str:
    return next(p for p in ALLOWED if module == p or module.startswith(p + "."))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(tree: ast.AST, module: str, path: Path) -> list[tuple[str, ast.AST]]:
    """(imported project module, node) for every import in the file, at any depth."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.append((resolve(name), node))
    return found


def resolve(name: str) -> str:
    """The project module a dotted name refers to (`boot.proc.run` -> `boot.proc`)."""
    parts = name.split(".")
    while parts:
        candidate = PROJECT.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return name


def sources() -> list[tuple[str, Path, ast.AST]]:
    out = []
    for package in PACKAGES:
        for path in sorted((PROJECT / package).rglob("*.py")):
            out.append((module_name(path), path, ast.parse(path.read_text(), str(path))))
    return out


SOURCES = sources()


def test_every_package_imports_only_what_lies_below_it():
    wrong = []
    for module, path, tree in SOURCES:
        mine = part_of(module)
        for target, node in project_imports(tree, module, path):
            theirs = part_of(target)
            if theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{path.relative_to(PROJECT)}:{node.lineno} {module} imports {target}")
    assert wrong == []


def test_no_project_module_is_imported_inside_a_function():
    lazy = []
    for module, path, tree in SOURCES:
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for target, node in project_imports(func, module, path):
                lazy.append(f"{path.relative_to(PROJECT)}:{node.lineno} imports {target}")
    assert lazy == []


def test_no_two_modules_import_each_other_even_through_others():
    graph: dict[str, set[str]] = {}
    for module, path, tree in SOURCES:
        graph[module] = {t for t, _ in project_imports(tree, module, path) if t != module}
    # Packages' __init__ modules only document; a module is not "cyclic" with its own package.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for nxt in graph.get(current, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted({" <-> ".join(sorted((a, b))) for a in graph for b in graph[a]
                     if reaches(b, a)})
    assert cycles == []


@pytest.mark.parametrize("host_only", HOST_ONLY)
def test_the_image_never_gets_the_host_only_launcher(host_only):
    """The recipe copies boot/ into the image and removes the host-only part from it."""
    step = (PROJECT / "recipes/steps/common/agent_install.yaml").read_text()
    assert f"rm -rf usr/lib/oar-live/{host_only.replace('.', '/')}" in step
