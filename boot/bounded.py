"""Parsing YAML and JSON that others wrote, within bounds: size, UTF-8, depth, alias expansion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# Expanded values and nesting a hand-written file of ours never comes near; an alias bomb
# ("billion laughs") passes them after a few lines of anchors and is refused before expansion.
MAX_VALUES = 100_000
MAX_DEPTH = 64

# libyaml's parser when PyYAML was built with it: the same nodes and marks, much faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InputError(ValueError):
    """Input refused, said in one sentence; `line` (1-based) when the place is known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _line_at(data: bytes | str, offset: int) -> int:
    newline = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline, 0, offset) + 1


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of `path`, reading no more than `limit` + 1 (so that `text` can refuse them).

    OSError as `open` raises it (FileNotFoundError, PermissionError, ...)."""
    with path.open("rb") as handle:
        return handle.read(limit + 1)


def text(data: bytes, limit: int) -> str:
    """`data` as text: at most `limit` bytes of UTF-8 without NUL bytes, else InputError."""
    if len(data) > limit:
        raise InputError(f"larger than {limit} bytes")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x})", _line_at(data, exc.start)
        ) from None
    nul = decoded.find("\0")
    if nul >= 0:
        raise InputError("not a text file (a NUL byte)", _line_at(decoded, nul))
    return decoded


def _measure(node: yaml.Node, depth: int, sizes: dict[int, tuple[int, int]],
             open_nodes: set[int], max_values: int, max_depth: int) -> tuple[int, int]:
    """(values, height) of `node` once aliases are expanded; InputError past the bounds."""
    known = sizes.get(id(node))
    if known is None:
        if id(node) in open_nodes:
            raise InputError("an alias refers to a value that contains it",
                             node.start_mark.line + 1)
        if depth > max_depth:
            raise InputError(f"nested deeper than {max_depth} levels", node.start_mark.line + 1)
        values, height = 1, 1
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            open_nodes.add(id(node))
            children = (
                [n for pair in node.value for n in pair]
                if isinstance(node, yaml.MappingNode) else node.value
            )
            for child in children:
                child_values, child_height = _measure(child, depth + 1, sizes, open_nodes,
                                                      max_values, max_depth)
                values += child_values
                height = max(height, child_height + 1)
                if values > max_values:
                    break  # the caller refuses it; counting on would only take longer
            open_nodes.discard(id(node))
        known = sizes[id(node)] = (values, height)
    if depth + known[1] - 1 > max_depth:
        raise InputError(f"nested deeper than {max_depth} levels", node.start_mark.line + 1)
    return known


def compose_yaml(source: str, max_values: int = MAX_VALUES,
                 max_depth: int = MAX_DEPTH) -> yaml.Node | None:
    """The YAML node tree of `source` (None when empty), refused (InputError) when invalid or
    when its anchors and aliases would expand past `max_values` values or `max_depth` levels."""
    try:
        node = yaml.compose(source, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = (exc.problem or exc.context or "syntax error").replace("\n", " ")
        raise InputError(f"invalid YAML: {problem}", mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as exc:
        raise InputError(
            f"invalid YAML: the character {chr(exc.character)!r} is not allowed",
            _line_at(source, exc.position),
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise InputError(f"nested deeper than {max_depth} levels") from None
    if node is None:
        return None
    values, _height = _measure(node, 1, {}, set(), max_values, max_depth)
    if values > max_values:
        raise InputError(
            f"its anchors and aliases expand to more than {max_values} values",
            node.start_mark.line + 1,
        )
    return node


def load_yaml(data: bytes, limit: int, max_values: int = MAX_VALUES,
              max_depth: int = MAX_DEPTH) -> Any:
    """The plain Python value of the YAML document `data` (safe tags only), within the bounds."""
    node = compose_yaml(text(data, limit), max_values, max_depth)
    if node is None:
        return None
    try:
        return yaml.SafeLoader("").construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = (getattr(exc, "problem", None) or "invalid value").replace("\n", " ")
        raise InputError(f"invalid YAML: {problem}", mark.line + 1 if mark else None) from None


def _json_depth_within(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def load_json(data: bytes, limit: int, max_depth: int = MAX_DEPTH) -> Any:
    """The value of the JSON document `data`: at most `limit` bytes of UTF-8, `max_depth` levels."""
    source = text(data, limit)
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON: {exc.msg}", exc.lineno) from None
    except RecursionError:
        raise InputError(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise InputError(f"not usable JSON: {str(exc).splitlines()[0]}") from None
    if not _json_depth_within(value, max_depth):
        raise InputError(f"JSON nested deeper than {max_depth} levels")
    return value
