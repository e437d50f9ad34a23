"""Recipe variables: resolve the globals and substitute `$$name` / `$${name}` in commands."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import RecipeError

_REF = re.compile(r"\$\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$([A-Za-z_][A-Za-z0-9_]*)")


def value_text(name: str, value: Any, path: Path | None, line: int | None) -> str:
    """How a global value reads inside a command: lists become space-separated words."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(value_text(name, v, path, line) for v in value)
    if isinstance(value, dict):
        raise RecipeError(f"variable '{name}' is a mapping; only text, numbers and lists can be "
                          "substituted", path, line)
    return str(value)


@dataclass
class Variables:
    """Resolved global and built-in variables; records which ones a substitution used."""

    raw: Mapping[str, Any]
    lines: Mapping[str, int]
    path: Path
    builtins: Mapping[str, str]
    _resolved: dict[str, str] = field(default_factory=dict)
    _deps: dict[str, frozenset[str]] = field(default_factory=dict)

    def resolve(self, name: str, _stack: tuple[str, ...] = ()) -> str:
        if name in self.builtins:
            return self.builtins[name]
        if name in self._resolved:
            return self._resolved[name]
        if name in _stack:
            chain = " -> ".join((*_stack, name))
            raise RecipeError(f"variable cycle: {chain}", self.path, self.lines.get(name))
        if name not in self.raw:
            raise KeyError(name)
        text = value_text(name, self.raw[name], self.path, self.lines.get(name))
        used: set[str] = set()
        text = self._substitute(text, self.path, self.lines.get(name), used, (*_stack, name))
        self._resolved[name] = text
        self._deps[name] = frozenset(used)
        return text

    def used_closure(self, names: set[str]) -> set[str]:
        """The variables named, and every global their values refer to."""
        out: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n in out:
                continue
            out.add(n)
            if n in self.raw:
                self.resolve(n)
                todo.extend(self._deps.get(n, ()))
        return out

    def substitute(self, text: str, path: Path, line: int, used: set[str] | None = None) -> str:
        return self._substitute(text, path, line, used if used is not None else set(), ())

    def _substitute(self, text: str, path: Path | None, line: int | None, used: set[str],
                    stack: tuple[str, ...]) -> str:
        def repl(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            try:
                value = self.resolve(name, stack)
            except KeyError:
                raise RecipeError(f"undefined variable '$${name}'", path, line) from None
            used.add(name)
            return value

        return _REF.sub(repl, text)

    def all_resolved(self) -> dict[str, str]:
        return {name: self.resolve(name) for name in self.raw}
