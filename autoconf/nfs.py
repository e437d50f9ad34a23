"""The shared home: the server exports /home over NFSv4 to the cluster network; nodes mount it.

Server (`export_home`): live-boot's root is an overlayfs, which knfsd refuses to export (it can
only with overlayfs' `nfs_export=on`, which live-boot does not set). So the server puts /home on
a tmpfs of its own first, with what the image holds in /home copied in: it lives in RAM like
the rest of the live system. A /home that already is a filesystem of its own (live-boot's
`persistence`, a disk install) is exported as it is. The export is the NFSv4 root (`fsid=0`):
nodes mount `SERVER:/`, and no pseudo-root has to be made of the overlay `/`. knfsd listens on
the cluster address only, NFSv4 only, for the cluster network only, root squashed.

Node (`mount_home`): mounts `SERVER:/` on /home before oar-node starts (OAR writes a job's
OAR.<id>.stdout in the folder it was submitted from, on the job's first node). The mount is
soft: with the server gone, an operation on /home fails (EIO) after MAJOR_TIMEOUT seconds
instead of hanging, and it works again by itself once the server is back; the export's root
handle does not change when the server reboots (fsid=0, the root of the export), so the mount
stays usable; a handle that went stale anyway makes `check_home` mount it again.

A solo machine (server and node at once) needs none of this: its /home is its own.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boot import proc
from boot.files import write_if_changed

__all__ = [
    "EXPORTS",
    "MOUNT_OPTIONS",
    "NFS_CONF",
    "NfsError",
    "check_home",
    "export_home",
    "exports_line",
    "mount_home",
    "mounted_on",
    "nfs_conf",
]

HOME = Path("home")
EXPORTS = Path("etc/exports.d/oar-live.exports")
NFS_CONF = Path("etc/nfs.conf.d/oar-live.conf")
STAGING = Path("run/oar-live/home-image")  # the image's /home, seen while the tmpfs is filled
NFS_UNIT = "nfs-server.service"
# knfsd's lease and grace periods (90 s each by default, 10 s is the least it takes): a server
# that rebooted answers the nodes' mounts again after GRACE_SECONDS instead of a minute and a half.
LEASE_SECONDS = 10
GRACE_SECONDS = 10
# soft: an operation fails after timeo x (1 + 2 + ... + retrans+1) tenths of seconds with the
# server gone (10 + 20 + 30 = 60 s) rather than hanging; softreval: a path lookup meanwhile is
# answered from the attribute cache (a shell prompt does not hang on its current folder).
TIMEO_DECISECONDS = 100
RETRANS = 2
MAJOR_TIMEOUT = sum(TIMEO_DECISECONDS * (n + 1) for n in range(RETRANS + 1)) // 10
MOUNT_OPTIONS = (f"vers=4.2,proto=tcp,soft,softreval,timeo={TIMEO_DECISECONDS},"
                 f"retrans={RETRANS},retry=0")
MOUNT_TIMEOUT = 45.0  # one mount attempt
MOUNT_DEADLINE = 90.0  # at boot: the node role gives up after this (the watcher keeps trying)
PROBE_TIMEOUT = 10.0

Runner = Callable[..., Any]


class NfsError(Exception):
    """/home could not be exported or mounted; the message says why."""


def mounted_on(mount_point: str, root: Path = Path("/")) -> tuple[str, str] | None:
    """(source, type) of the filesystem mounted last on `mount_point`, from /proc/mounts."""
    found = None
    try:
        text = (root / "proc/mounts").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1].replace("\\040", " ") == mount_point:
            found = (fields[0], fields[2])
    return found


# ----------------------------------------------------------------------------- server


def exports_line(network: ipaddress.IPv4Network) -> str:
    """/etc/exports.d entry: /home as the NFSv4 root, read-write for the cluster network only."""
    return f"/home {network}(rw,sync,no_subtree_check,root_squash,fsid=0)\n"


def nfs_conf(address: str) -> str:
    """nfs.conf drop-in: knfsd on the cluster address only, NFSv4 only, short grace period."""
    return (
        "# Written by oar-autoconf: the shared home, NFSv4 on the cluster network only.\n"
        "[nfsd]\n"
        f"host={address}\n"
        "vers3=n\n"
        f"lease-time={LEASE_SECONDS}\n"
        f"grace-time={GRACE_SECONDS}\n"
    )


def ensure_home_filesystem(root: Path = Path("/"), run: Runner = proc.run) -> bool:
    """/home is a filesystem knfsd can export: a tmpfs holding the image's /home when it sits
    on the live system's overlay (or nothing of its own)."""
    home = str(root / HOME)
    current = mounted_on(home, root)
    if current is not None and current[1] != "overlay":
        return False
    staging = root / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    run(["mount", "--bind", str(root / HOME), str(staging)], timeout=30)
    try:
        # systemd makes / a shared mount: the bind would receive the tmpfs mounted on /home
        # below and show it instead of the image's files. Private, it keeps showing them.
        run(["mount", "--make-private", str(staging)], timeout=30)
        run(["mount", "-t", "tmpfs", "-o", "mode=0755", "oar-live-home", str(root / HOME)],
            timeout=30)
        run(["cp", "-a", f"{staging}/.", str(root / HOME)], timeout=120)
    finally:
        run(["umount", str(staging)], timeout=30, check=False)
    return True


def export_home(network: ipaddress.IPv4Network, address: str, root: Path = Path("/"),
                run: Runner = proc.run) -> bool:
    """The server exports /home to `network`, knfsd listening on `address` (check, then act)."""
    if network.is_loopback:
        return False  # no cluster network: nobody to share with
    changed = ensure_home_filesystem(root, run)
    changed |= write_if_changed(root / NFS_CONF, nfs_conf(address))
    exports_changed = write_if_changed(root / EXPORTS, exports_line(network))
    running = run(["systemctl", "is-active", "--quiet", NFS_UNIT], check=False,
                  timeout=30).returncode == 0
    if running and not changed:
        if exports_changed:
            run(["exportfs", "-ra"], timeout=60)
        return exports_changed
    run(["systemctl", "restart" if running else "start", NFS_UNIT], timeout=120)
    return True


# ----------------------------------------------------------------------------- node


def mount_home(server: str, root: Path = Path("/"), run: Runner | None = None,
               deadline: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> bool:
    """/home is the server's shared home (mounted when it is not); retry until `deadline`
    seconds have passed (0: one attempt). NfsError when it could not be mounted."""
    run = run or proc.run  # looked up now: tests replace boot.proc.run
    source = f"{server}:/"
    home = str(root / HOME)
    current = mounted_on(home, root)
    if current == (source, "nfs4"):
        return False
    if current is not None and current[1] == "nfs4":  # another server's: this one replaces it
        run(["umount", "-l", home], timeout=30, check=False)
    give_up = time.monotonic() + deadline
    while True:
        try:
            result = run(["mount", "-t", "nfs4", "-o", MOUNT_OPTIONS, source, home],
                         check=False, timeout=MOUNT_TIMEOUT)
        except proc.CommandError as exc:  # it timed out
            why = str(exc)
        else:
            if result.returncode == 0:
                return True
            why = ((result.stderr or "").strip().splitlines()[-1:] or [
                f"exit status {result.returncode}"])[0]
        left = give_up - time.monotonic()
        if left <= 0:
            raise NfsError(f"cannot mount the shared home {source} on /home: {why}")
        sleep(min(5.0, left))


def check_home(server: str, root: Path = Path("/"), run: Runner | None = None) -> bool:
    """The watcher's poll: /home is mounted from `server` and its handle is not stale (mounted
    again when it is not). True when it mounted it."""
    run = run or proc.run
    home = str(root / HOME)
    if mounted_on(home, root) == (f"{server}:/", "nfs4"):
        try:
            probe = run(["stat", "-f", "-c", "%T", home], check=False, timeout=PROBE_TIMEOUT)
        except proc.CommandError:
            return False  # the server does not answer (rebooting): the soft mount waits for it
        if probe.returncode == 0 or "stale" not in (probe.stderr or "").lower():
            return False
        run(["umount", "-l", home], timeout=30, check=False)
    return mount_home(server, root, run)

