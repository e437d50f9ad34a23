"""One date for every inode of an ext4 image: the disk outputs' last step to the same bytes.

`mkfs.ext4 -d TREE` copies each file's change time (ctime) and access time from the build
tree, and a ctime can only be "now": two builds of the same inputs would differ in every inode.
This sets both times of every inode in use to SOURCE_DATE_EPOCH, in one debugfs run, with the
filesystem's own write time at that date too (E2FSPROGS_FAKE_TIME). The inodes in use are
those the "Free inodes:" ranges of dumpe2fs leave out, group by group. Modification times are
the tree's (export_disk clamps them first, as the squashfs does).

    python3 -m builder.ext4dates IMAGE EPOCH      (export_disk runs it)
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from boot import proc

__all__ = ["Ext4DatesError", "commands", "in_use_inodes", "set_dates"]

_IPG = re.compile(r"^Inodes per group:\s+(\d+)$", re.M)
_GROUP = re.compile(r"^Group (\d+):", re.M)
_FREE = re.compile(r"^\s+Free inodes:\s*(.*)$")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


class Ext4DatesError(Exception):
    """The image's inodes cannot be listed or dated; the message says which and why."""


def in_use_inodes(dumpe2fs: str) -> Iterator[int]:
    """The inode numbers in use, from `dumpe2fs IMAGE` (without -h)."""
    found = _IPG.search(dumpe2fs)
    if found is None:
        raise Ext4DatesError("dumpe2fs printed no 'Inodes per group'")
    per_group = int(found[1])
    group = None
    for line in dumpe2fs.splitlines():
        if (start := _GROUP.match(line)) is not None:
            group = int(start[1])
            continue
        free = _FREE.match(line)
        if free is None or group is None:
            continue
        used, last = group * per_group + 1, (group + 1) * per_group
        for part in filter(None, (p.strip() for p in free[1].split(","))):
            span = _RANGE.fullmatch(part)
            if span is None:
                raise Ext4DatesError(f"group {group}: cannot read free inodes {part!r}")
            first = int(span[1])
            yield from range(used, first)
            used = int(span[2] or first) + 1
        yield from range(used, last + 1)
        group = None


def commands(inodes: Iterator[int], epoch: int) -> str:
    """debugfs's commands that give each inode `epoch` as change and access time."""
    return "".join(f"sif <{i}> ctime @{epoch}\nsif <{i}> atime @{epoch}\n" for i in inodes)


def set_dates(image: Path, epoch: int, run=proc.run) -> int:
    """Date every inode in use of `image` (an ext4 file, not mounted); how many there were."""
    fake_time = {"E2FSPROGS_FAKE_TIME": str(epoch)}
    try:
        listing = run(["dumpe2fs", str(image)], timeout=600).stdout
        inodes = list(in_use_inodes(listing))
        if not inodes:
            raise Ext4DatesError(f"{image}: dumpe2fs lists no inode in use")
        with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
            script.write(commands(iter(inodes), epoch))
            script.flush()
            done = run(["debugfs", "-w", "-f", script.name, str(image)], env=fake_time,
                       timeout=1800)
    except proc.CommandError as exc:
        raise Ext4DatesError(f"{image}: {exc}") from None
    # debugfs reports a failed command on stderr and still exits 0.
    errors = [ln for ln in done.stderr.splitlines() if ln and not ln.startswith("debugfs ")]
    if errors:
        raise Ext4DatesError(f"{image}: debugfs: {errors[0]}"
                             + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    return len(inodes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m builder.ext4dates",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="an ext4 filesystem image, not mounted")
    parser.add_argument("epoch", type=int, help="the date, in seconds since 1970 (UTC)")
    args = parser.parse_args(argv)
    try:
        count = set_dates(args.image, args.epoch)
    except Ext4DatesError as exc:
        print(f"ext4dates: {exc}", file=sys.stderr)
        return 1
    print(f"{count} inodes of {args.image} dated @{args.epoch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
