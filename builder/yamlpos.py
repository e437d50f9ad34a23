"""YAML loading that remembers the line of every value, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
    return _SCALARS.construct_object(node)


_SCALARS = yaml.SafeLoader("")
# libyaml's parser when PyYAML was built with it: the same nodes and marks, much faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> Any:
    """Load one YAML document; a syntax error becomes a one-line RecipeError with its line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError("file not found", path) from None
    except OSError as exc:
        raise RecipeError(f"cannot read: {exc.strerror}", path) from None
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise RecipeError(f"invalid YAML: {problem}", path, line) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"invalid YAML: {exc}", path) from None
    if node is None:
        return None
    return _convert(node, path)
