"""Checkpoints: each macrostep's appliance layer, kept under a key of everything that made it."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from builder.compile import CompiledMacrostep
from builder.variables import Variables

KEY_LENGTH = 24
# Variables that name an input file anywhere on the host whose content, not only its name,
# decides what a step makes (`--set secrets=FILE`: the build secrets file).
CONTENT_VARIABLES = frozenset({"secrets"})
_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".ruff_cache", ".venv"}


def project_root(recipe_dir: Path) -> Path:
    """The tree whose files may feed a macrostep: the parent of a `recipes/` folder."""
    recipe_dir = recipe_dir.resolve()
    for parent in (recipe_dir, *recipe_dir.parents):
        if parent.name == "recipes":
            return parent.parent
    return recipe_dir


def tree_digest(path: Path) -> str:
    """Content hash of a file, or of a directory's files, names, modes and symlinks."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        # os.walk lists a symlink to a directory with the directories, and does not enter it
        linked = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        for name in sorted(filenames + linked):
            f = Path(dirpath) / name
            rel = f.relative_to(path).as_posix()
            h.update(rel.encode() + b"\0")
            if f.is_symlink():
                h.update(b"L" + os.readlink(f).encode())
            else:
                h.update(oct(f.stat().st_mode & 0o777).encode())
                h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def step_key(previous: str, compiled: CompiledMacrostep, sources: Variables,
             root: Path) -> str:
    """Hash of the previous key, the resolved commands and the project files they name.

    `compiled` must come from variables whose built-in paths are placeholders, so the key does
    not depend on where the project or the work directory is; `sources` resolves the variables
    the macrostep uses to real paths, whose content under `root` is hashed.
    """
    h = hashlib.sha256()
    h.update(previous.encode() + b"\0" + compiled.macro.name.encode() + b"\0")
    # Comment lines (the compiler's own name file paths) do not change what a step does.
    h.update("\n".join(ln for ln in compiled.body.splitlines()
                       if not ln.lstrip().startswith("#")).encode())
    for name in sorted(compiled.used_variables):
        if name not in sources.raw:
            continue
        value = sources.resolve(name)
        if not value.startswith("/"):
            continue
        target = Path(value)
        try:
            resolved = target.resolve()
        except OSError:
            continue
        if resolved.exists() and resolved.is_relative_to(root) and resolved != root:
            h.update(f"{name}={tree_digest(resolved)}".encode())
        elif resolved.is_file() and name in CONTENT_VARIABLES:
            # An input file outside the project (a build secrets file): its content decides.
            h.update(f"{name}={tree_digest(resolved)}".encode())
    return h.hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class Checkpoint:
    key: str
    layer: Path
    env: Path


class CheckpointStore:
    """Layers saved after each macrostep, shared by every build under one workdir_base."""

    def __init__(self, directory: Path):
        self.directory = directory

    def _entry(self, key: str) -> Path:
        return self.directory / key

    def get(self, key: str) -> Checkpoint | None:
        entry = self._entry(key)
        if (entry / "complete").exists():
            return Checkpoint(key, entry / "layer", entry / "env.sh")
        return None

    def save(self, key: str, layer: Path, env: Path, name: str, recipe: str) -> Checkpoint:
        """Move a finished layer into the store (cheap: a rename on the same filesystem)."""
        entry = self._entry(key)
        if self.get(key):
            shutil.rmtree(layer, ignore_errors=True)
            return self.get(key)  # type: ignore[return-value]
        if entry.exists():
            shutil.rmtree(entry)
        entry.mkdir(parents=True)
        os.rename(layer, entry / "layer")
        shutil.copy2(env, entry / "env.sh")
        (entry / "meta.json").write_text(json.dumps({"macrostep": name, "recipe": recipe}) + "\n")
        (entry / "complete").touch()
        return Checkpoint(key, entry / "layer", entry / "env.sh")

    @contextmanager
    def in_use(self):
        """Held by a running build: pruning waits for no build to use the store."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield

    def prune(self, recipe: str, keep: set[str]) -> int:
        """Drop this recipe's checkpoints that its latest build no longer uses.

        Only when no other build is using the store (their overlays may stand on any layer);
        returns how many were removed.
        """
        removed = 0
        with (self.directory / ".lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            for entry in self.directory.iterdir():
                meta = entry / "meta.json"
                if entry.name in keep or not meta.exists():
                    continue
                if json.loads(meta.read_text()).get("recipe") == recipe:
                    shutil.rmtree(entry)
                    removed += 1
        return removed

    def clear(self) -> int:
        """Remove every checkpoint; returns how many there were."""
        if not self.directory.exists():
            return 0
        count = sum(1 for p in self.directory.iterdir() if p.is_dir())
        shutil.rmtree(self.directory)
        return count
