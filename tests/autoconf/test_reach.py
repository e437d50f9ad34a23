"""The server's check of a node: ssh to oar-node's port as oar, like OAR's checker, and df."""

from __future__ import annotations

import subprocess

import pytest

from autoconf import reach
from boot.proc import CommandError

DF_OK = """Filesystem     1024-blocks   Used Available Capacity Mounted on
tmpfs              1000000  10000    990000       2% /tmp
overlay            2000000 100000   1900000       5% /
"""
DF_FULL = DF_OK.replace("990000", "12")


class Ssh:
    def __init__(self, status: int = 0, stdout: str = DF_OK, stderr: str = "",
                 raises: bool = False) -> None:
        self.result = (status, stdout, stderr)
        self.raises = raises
        self.argv: list[str] = []

    def __call__(self, argv, check=True, timeout=None, **kw):
        self.argv = argv
        if self.raises:
            raise CommandError(argv, -9, "timed out")
        return subprocess.CompletedProcess(argv, *self.result)


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "oar.conf"
    path.write_text('OPENSSH_CMD="/usr/bin/ssh -p 6667 -e none"\n')
    return path


def test_the_check_is_oars_ssh_command_run_as_oar(conf):
    ssh = Ssh()
    assert reach.Checker(conf, ssh).check("node-aaaaaaaaaaaa", "10.0.0.5") is None
    assert ssh.argv[:8] == ["runuser", "-u", "oar", "--", "/usr/bin/ssh", "-p", "6667", "-e"]
    assert "BatchMode=yes" in ssh.argv and "HostKeyAlias=node-aaaaaaaaaaaa" in ssh.argv
    assert ssh.argv[-2:] == ["10.0.0.5", reach.DISK_COMMAND]


def test_without_openssh_cmd_oars_default_is_used(tmp_path):
    ssh = Ssh()
    reach.Checker(tmp_path / "missing.conf", ssh).check("node-aaaaaaaaaaaa", "10.0.0.5")
    assert ssh.argv[4:7] == ["/usr/bin/ssh", "-p", "6667"]


@pytest.mark.parametrize("ssh, words", [
    (Ssh(255, "", "ssh: connect to host 10.0.0.5 port 6667: Connection refused\n"),
     "oar-node's sshd at 10.0.0.5:6667 does not let oar in (ssh: connect to host"),
    (Ssh(255, "", "Warning: Permanently added 'x' (ED25519)\noar@10.0.0.5: Permission denied "
                  "(publickey).\n"), "Permission denied (publickey)"),
    (Ssh(1, "", "df: /var/lib/oar: No such file or directory\n"),
     "a command as oar on the node failed (df: /var/lib/oar"),
    (Ssh(raises=True), "the check did not finish"),
    (Ssh(0, DF_FULL), "disk full (/tmp has 12 KiB free)"),
])  # fmt: skip
def test_a_node_oar_cannot_use_gets_the_reason_in_one_line(conf, ssh, words):
    problem = reach.Checker(conf, ssh).check("node-aaaaaaaaaaaa", "10.0.0.5")
    assert problem is not None and words in problem and "\n" not in problem
    assert problem.startswith("node-aaaaaaaaaaaa: ")
