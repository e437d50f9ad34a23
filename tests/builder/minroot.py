"""A tiny appliance for engine tests: bash, coreutils and their libraries copied from the host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

TOOLS = ("bash", "sh", "env", "cat", "mkdir", "dirname", "echo", "sleep", "ls", "grep", "id",
         "test", "true", "false", "touch", "rm", "head")


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    return [w for w in out.split() if w.startswith("/")]


def populate(root: Path) -> None:
    """Copy the tools into root, each at its host path (usrmerge: /bin -> usr/bin links)."""
    for d in ("usr/bin", "usr/lib", "usr/lib64", "etc", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                         ("sbin", "usr/bin")):
        if not (root / link).exists():
            (root / link).symlink_to(target)
    for tool in TOOLS:
        path = shutil.which(tool)
        if not path:
            continue
        real = Path(path).resolve()
        for f in [str(real), *_libraries(str(real))]:
            dest = root / Path(f).resolve().relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(f).resolve(), dest)
            if Path(f) != Path(f).resolve():
                alias = root / Path(f).relative_to("/")
                if not alias.exists():
                    alias.parent.mkdir(parents=True, exist_ok=True)
                    alias.symlink_to(Path(f).resolve())
        usr_bin = root / "usr/bin" / tool
        if not usr_bin.exists():
            usr_bin.symlink_to(real)


if __name__ == "__main__":
    import sys

    populate(Path(sys.argv[1]))
