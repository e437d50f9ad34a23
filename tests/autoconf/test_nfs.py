"""The shared home: what the server writes and runs to export /home, and how a node mounts it."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from autoconf import nfs

PROJECT = Path(__file__).resolve().parents[2]

NETWORK = ipaddress.IPv4Network("10.77.0.0/24")


class System:
    """mount, systemctl, exportfs, stat: recorded; `mounts` is what /proc/mounts shows."""

    def __init__(self, root: Path, mounts: str = "", fail_mounts: int = 0) -> None:
        self.root = root
        self.calls: list[list[str]] = []
        self.running = False
        self.fail_mounts = fail_mounts
        self.stat_error = ""
        (root / "proc").mkdir(exist_ok=True)
        (root / "home").mkdir(exist_ok=True)
        (root / "proc/mounts").write_text(mounts)

    def __call__(self, argv, check=True, timeout=None, **_kw):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        rc, err = 0, ""
        match argv:
            case ["systemctl", "is-active", "--quiet", _]:
                rc = 0 if self.running else 3
            case ["systemctl", ("start" | "restart"), _]:
                self.running = True
            case ["mount", "-t", "nfs4", "-o", _, source, point]:
                if self.fail_mounts:
                    self.fail_mounts -= 1
                    rc, err = 32, "mount.nfs4: Connection refused\n"
                else:
                    with (self.root / "proc/mounts").open("a") as f:
                        f.write(f"{source} {point} nfs4 rw 0 0\n")
            case ["umount", "-l", point]:
                mounts = self.root / "proc/mounts"
                mounts.write_text("".join(ln for ln in mounts.read_text().splitlines(True)
                                          if ln.split()[1] != point))
            case ["stat", "-f", *_]:
                rc, err = (1, self.stat_error) if self.stat_error else (0, "")
        if check and rc:
            raise AssertionError(f"{argv} failed")
        return subprocess.CompletedProcess(argv, rc, "", err)


def test_the_server_exports_home_to_the_cluster_network_only(tmp_path):
    system = System(tmp_path, f"overlay / overlay rw 0 0\ntmpfs {tmp_path}/home tmpfs rw 0 0\n")
    assert nfs.export_home(NETWORK, "10.77.0.2", tmp_path, system) is True
    assert (tmp_path / nfs.EXPORTS).read_text() == (
        "/home 10.77.0.0/24(rw,sync,no_subtree_check,root_squash,fsid=0)\n")
    conf = (tmp_path / nfs.NFS_CONF).read_text()
    assert "host=10.77.0.2\n" in conf and "vers3=n\n" in conf
    assert ["systemctl", "start", nfs.NFS_UNIT] in system.calls
    system.calls.clear()
    assert nfs.export_home(NETWORK, "10.77.0.2", tmp_path, system) is False
    assert system.calls == [["systemctl", "is-active", "--quiet", nfs.NFS_UNIT]]


def test_a_home_on_the_live_overlay_moves_to_a_tmpfs_with_its_files(tmp_path):
    system = System(tmp_path, "overlay / overlay rw 0 0\n")
    assert nfs.ensure_home_filesystem(tmp_path, system) is True
    staging, home = str(tmp_path / nfs.STAGING), str(tmp_path / "home")
    assert system.calls == [
        ["mount", "--bind", home, staging],
        ["mount", "--make-private", staging],
        ["mount", "-t", "tmpfs", "-o", "mode=0755", "oar-live-home", home],
        ["cp", "-a", f"{staging}/.", home],
        ["umount", staging],
    ]


def test_no_cluster_network_no_export(tmp_path):
    system = System(tmp_path)
    assert nfs.export_home(ipaddress.IPv4Network("127.0.0.0/8"), "127.0.0.1", tmp_path,
                           system) is False
    assert system.calls == []


def test_a_node_mounts_the_servers_root_export_soft_and_once(tmp_path):
    system = System(tmp_path)
    assert nfs.mount_home("10.77.0.2", tmp_path, system) is True
    (argv,) = system.calls
    assert argv[:3] == ["mount", "-t", "nfs4"] and argv[-2:] == ["10.77.0.2:/", str(tmp_path /
                                                                                     "home")]
    assert "soft" in argv[4].split(",") and "vers=4.2" in argv[4].split(",")
    assert nfs.mount_home("10.77.0.2", tmp_path, system) is False
    assert nfs.mounted_on(str(tmp_path / "home"), tmp_path) == ("10.77.0.2:/", "nfs4")


def test_a_node_retries_until_its_deadline_then_says_why(tmp_path):
    system = System(tmp_path, fail_mounts=2)
    slept = []
    assert nfs.mount_home("10.77.0.2", tmp_path, system, deadline=60, sleep=slept.append)
    assert len(slept) == 2
    (tmp_path / "x").mkdir()
    system = System(tmp_path / "x", fail_mounts=1)
    with pytest.raises(nfs.NfsError, match=r"cannot mount the shared home 10\.77\.0\.2:/ on "
                                           r"/.*home: mount.nfs4: Connection refused"):
        nfs.mount_home("10.77.0.2", tmp_path / "x", system)


def test_the_watcher_mounts_again_a_stale_home_and_waits_for_a_server_that_is_away(tmp_path):
    system = System(tmp_path, f"10.77.0.2:/ {tmp_path}/home nfs4 rw 0 0\n")
    assert nfs.check_home("10.77.0.2", tmp_path, system) is False
    system.stat_error = "stat: cannot read file system information: Input/output error\n"
    assert nfs.check_home("10.77.0.2", tmp_path, system) is False, "an away server: wait"
    system.stat_error = "stat: cannot read file system information: Stale file handle\n"
    assert nfs.check_home("10.77.0.2", tmp_path, system) is True
    assert [c[0] for c in system.calls[-2:]] == ["umount", "mount"]
    assert nfs.MAJOR_TIMEOUT == 60


@pytest.mark.integration
def test_a_real_home_keeps_its_files_in_the_tmpfs_when_the_root_is_a_shared_mount(tmp_path):
    """Real mounts, in a mount namespace of their own whose mounts are shared, as systemd
    makes them on a live system (the tmpfs must not propagate into the bind it is filled from)."""
    (tmp_path / "home/user").mkdir(parents=True)
    (tmp_path / "home/user/.profile").write_text("mesg n\n")
    script = (f"from pathlib import Path; import os; from autoconf import nfs; "
              f"nfs.ensure_home_filesystem(Path({str(tmp_path)!r})); "
              f"print(sorted(os.listdir({str(tmp_path / 'home/user')!r})))")
    done = subprocess.run(["unshare", "--mount", "--propagation", "shared", sys.executable, "-c",
                           script], capture_output=True, text=True, timeout=60, cwd=PROJECT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['.profile']"
