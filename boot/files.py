"""Check-then-act file writes for the agent: a file changes only when its content differs."""

from __future__ import annotations

import os
from pathlib import Path


def write_if_changed(path: Path, data: str | bytes, mode: int = 0o644) -> bool:
    """Write `data` atomically unless the file already holds it; True when the file changed.

    An existing file keeps its mode and owner; a new one gets `mode`, owned by whoever runs us.
    """
    content = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == content:
            return False
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        info = None
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.oar-live")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(temporary, info.st_mode & 0o7777 if info else mode)
    if info is not None and os.geteuid() == 0:
        os.chown(temporary, info.st_uid, info.st_gid)
    os.replace(temporary, path)
    return True
