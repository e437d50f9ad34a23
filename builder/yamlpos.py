"""YAML loading that remembers the line of every value, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from boot import bounded
from builder.errors import RecipeError


class PosStr(str):
    """A string from a YAML file that knows where it came from."""

    line: int = 0
    path: Path | None = None


class PosDict(dict):
    line: int = 0
    path: Path | None = None
    key_lines: dict[str, int]


class PosList(list):
    line: int = 0
    path: Path | None = None


def line_of(value: Any, default: int = 0) -> int:
    return getattr(value, "line", default) or default


def _convert(node: yaml.Node, path: Path) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = PosDict()
        out.line, out.path, out.key_lines = line, path, {}
        for key_node, value_node in node.value:
            key = _convert(key_node, path)
            if not isinstance(key, str):
                raise RecipeError(f"mapping keys must be names, got {key!r}", path,
                                  key_node.start_mark.line + 1)
            if key in out:
                raise RecipeError(f"duplicate key '{key}'", path, key_node.start_mark.line + 1)
            out[key] = _convert(value_node, path)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        out_list = PosList(_convert(item, path) for item in node.value)
        out_list.line, out_list.path = line, path
        return out_list
    if node.tag == "tag:yaml.org,2002:str":
        s = PosStr(node.value)
        s.line, s.path = line, path
        return s
    # Other scalars (ints, bools, nulls, floats): let PyYAML resolve them.
    try:
        return _SCALARS.construct_object(node)
    except (yaml.YAMLError, ValueError) as exc:
        problem = getattr(exc, "problem", None) or "not a value YAML can read"
        raise RecipeError(f"invalid YAML: {problem}", path, line) from None


_SCALARS = yaml.SafeLoader("")
MAX_FILE_BYTES = 1024 * 1024  # a recipe or macrostep file; ours are under 10 KiB


def load_yaml(path: Path) -> Any:
    """Load one YAML document; bad bytes, bad syntax, an alias bomb or an oversized file become
    a one-line RecipeError naming the file (and the line when known)."""
    try:
        data = bounded.read_bytes(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise RecipeError("file not found", path) from None
    except IsADirectoryError:
        raise RecipeError("is a directory, not a YAML file", path) from None
    except OSError as exc:
        raise RecipeError(f"cannot read: {exc.strerror}", path) from None
    try:
        node = bounded.compose_yaml(bounded.text(data, MAX_FILE_BYTES))
    except bounded.InputError as exc:
        raise RecipeError(exc.message, path, exc.line) from None
    if node is None:
        return None
    return _convert(node, path)
