"""Errors the user meets: malformed input (exit 2), a failed build (exit 1), and how they print."""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_BUILD_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class BuilderError(Exception):
    """Base of every error build-iso reports as a sentence instead of a traceback."""

    exit_status = EXIT_BUILD_FAILED

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class RecipeError(BuilderError):
    """Malformed input: the message names the file and the line."""

    exit_status = EXIT_BAD_INPUT

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None,
                 hint: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message, hint)
        self.path = path
        self.line = line


class BuildFailed(BuilderError):
    """A microstep failed; the message names recipe, macrostep, microstep and command."""

    exit_status = EXIT_BUILD_FAILED


class Interrupted(BuilderError):
    exit_status = EXIT_INTERRUPTED


def report(error: BuilderError, stream=None) -> None:
    stream = stream or sys.stderr
    print(f"build-iso: error: {error.message}", file=stream)
    if error.hint:
        print(f"build-iso: hint: {error.hint}", file=stream)
