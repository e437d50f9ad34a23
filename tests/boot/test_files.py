import os
from pathlib import Path

from boot.files import write_if_changed


def test_new_file_gets_the_mode_and_the_content(tmp_path: Path):
    path = tmp_path / "etc" / "oar" / "oar.conf"
    assert write_if_changed(path, "DB_PORT=5432\n", 0o600) is True
    assert path.read_text() == "DB_PORT=5432\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_same_content_is_left_alone(tmp_path: Path):
    path = tmp_path / "hosts"
    path.write_text("x\n")
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))
    assert write_if_changed(path, b"x\n") is False
    assert path.stat().st_mtime_ns == before - 10**9


def test_existing_file_keeps_its_mode(tmp_path: Path):
    path = tmp_path / "conf"
    path.write_text("old\n")
    path.chmod(0o640)
    assert write_if_changed(path, "new\n", 0o600) is True
    assert path.read_text() == "new\n" and path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["conf"]   # no temporary left behind
