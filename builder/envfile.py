"""The variables file a macrostep leaves for the next ones (`export -p` of its shell).

The script writes it with a builtin (no process at every macrostep's end); the engine then
keeps only the recipe's variables: what the engine itself sets for every script (PATH, HOME,
LANG...) and the script's internal `__bi_*` names would otherwise leak into later macrosteps.
A value may span lines; a variable is a `declare -x` line and the lines that continue it.
"""

from __future__ import annotations

import re
from pathlib import Path

from builder.compile import ENGINE_ENV

_DECLARE = re.compile(r"^declare -[a-zA-Z]*x[a-zA-Z]* ([A-Za-z_][A-Za-z0-9_]*)(=|$)")


def _dropped(name: str) -> bool:
    return name in ENGINE_ENV or name.startswith("__bi_")


def recipe_variables(text: str) -> str:
    """`text` (as `export -p` prints it) without the engine's own variables."""
    kept: list[str] = []
    keep = True
    for line in text.splitlines(keepends=True):
        declared = _DECLARE.match(line)
        if declared:
            keep = not _dropped(declared.group(1))
        if keep:
            kept.append(line)
    return "".join(kept)


def keep_recipe_variables(path: Path) -> None:
    """Rewrite the variables file at `path` (when there is one) with the recipe's only."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    kept = recipe_variables(text)
    if kept != text:
        path.write_text(kept)
