"""The one place build-iso runs host processes: argument lists, never shell strings."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder.errors import BuilderError


class CommandError(BuilderError):
    """A host command failed; carries argv, exit status and captured stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = ""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        hint = None
        if returncode == 127 or not shutil.which(self.argv[0]):
            hint = f"'{self.argv[0]}' is not installed on this host (try: make host-build-deps)"
        super().__init__(
            f"{' '.join(self.argv)} failed with exit status {returncode}"
            + (f": {detail}" if detail else ""),
            hint,
        )


def run(argv: Sequence[str], *, check: bool = True, capture: bool = True,
        env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
        input: str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run argv; on failure raise CommandError with its stderr (unless check is False)."""
    try:
        proc = subprocess.run(
            list(argv), check=False, env=None if env is None else dict(env), cwd=cwd,
            input=input, text=True, timeout=timeout,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr or "")
    return proc
