"""A real minimal Debian: mmdebstrap, chroot commands, variables across macrosteps, a tgz."""

import subprocess
from pathlib import Path

import pytest

from builder.cli import main

pytestmark = pytest.mark.integration
RECIPE = Path(__file__).with_name("recipes") / "debian-minimal.yaml"


def test_minimal_debian_builds_and_exports_a_tgz(tmp_path: Path, capsys):
    work = tmp_path / "work"
    assert main([str(RECIPE), "--workdir", str(work), "--no-checkpoint"]) == 0
    tgz = work / "out" / "minimal.tgz"

    def read(member: str) -> str:
        return subprocess.run(["tar", "-xzOf", tgz, member], capture_output=True, text=True,
                              check=True).stdout

    assert read("./etc/hostname") == "minimal\n"
    assert read("./etc/motd") == "built by build-iso\nsuite bookworm\nrelease bookworm\n"
    assert read("./etc/build-frontend") == "frontend=noninteractive\n"
    assert "jobuser:x:" in read("./etc/passwd")
    names = subprocess.run(["tar", "-tzf", tgz], capture_output=True, text=True).stdout
    assert "./usr/bin/apt-get" in names.splitlines()
    assert not any(n.startswith("./proc/") and n != "./proc/" for n in names.splitlines())
    with open("/proc/mounts") as f:
        assert str(work) not in f.read()
