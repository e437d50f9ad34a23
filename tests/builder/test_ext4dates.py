"""builder.ext4dates: the inodes in use, read from dumpe2fs; (integration) real ext4 images made
twice from a tree whose change times moved in between come out the same bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from builder import ext4dates

DUMPE2FS = """\
Filesystem volume name:   oar-live
Inode count:              24
Inodes per group:         8
Inode size:               256

Group 0: (Blocks 0-32767) csum 0x1234 [ITABLE_ZEROED]
  Primary superblock at 0, Group descriptors at 1-1
  Free blocks: 1200-32767
  Free inodes: 4-5, 7
Group 1: (Blocks 32768-65535) csum 0x5678 [INODE_UNINIT, ITABLE_ZEROED]
  Free blocks: 32768-65535
  Free inodes: 9-16
Group 2: (Blocks 65536-98303) csum 0x9abc [ITABLE_ZEROED]
  Free blocks: 70000-98303
  Free inodes:
"""


def test_the_inodes_in_use_are_those_no_group_lists_as_free():
    assert list(ext4dates.in_use_inodes(DUMPE2FS)) == [1, 2, 3, 6, 8, *range(17, 25)]


def test_a_listing_without_groups_or_with_an_unreadable_range_is_refused():
    with pytest.raises(ext4dates.Ext4DatesError, match="Inodes per group"):
        list(ext4dates.in_use_inodes("Filesystem volume name: x\n"))
    broken = DUMPE2FS.replace("Free inodes: 9-16", "Free inodes: 9-x")
    with pytest.raises(ext4dates.Ext4DatesError, match=r"group 1: cannot read free inodes '9-x'"):
        list(ext4dates.in_use_inodes(broken))


def test_each_inode_gets_the_date_as_change_and_access_time():
    assert ext4dates.commands(iter([2, 11]), 1735689600) == (
        "sif <2> ctime @1735689600\nsif <2> atime @1735689600\n"
        "sif <11> ctime @1735689600\nsif <11> atime @1735689600\n")


EPOCH = 1735689600
UUID = "11111111-2222-4333-a444-555555555555"


def _mkfs(tree, image) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-L", "t", "-U", UUID, "-E", f"hash_seed={UUID}",
                    "-d", str(tree), str(image), "16M"], check=True,
                   env=dict(os.environ, E2FSPROGS_FAKE_TIME=str(EPOCH)))


@pytest.mark.integration
def test_two_images_of_a_tree_whose_times_moved_are_the_same_bytes_once_dated(tmp_path):
    if not (shutil.which("mkfs.ext4") and shutil.which("debugfs")):
        pytest.fail("e2fsprogs is not installed (recipes/host.txt)")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/a file").write_text("x\n")
    (tree / "etc/link").symlink_to("a file")
    for path in (tree, tree / "etc", tree / "etc/a file"):
        os.utime(path, (EPOCH, EPOCH))
    os.utime(tree / "etc/link", (EPOCH, EPOCH), follow_symlinks=False)
    first, second = tmp_path / "first.ext4", tmp_path / "second.ext4"
    _mkfs(tree, first)
    time.sleep(1.1)
    (tree / "etc/a file").chmod(0o600)  # a new change time (and the mkfs read: access time)
    (tree / "etc/a file").chmod(0o644)
    _mkfs(tree, second)
    assert first.read_bytes() != second.read_bytes()
    counts = [ext4dates.set_dates(image, EPOCH) for image in (first, second)]
    assert counts[0] == counts[1] >= 14  # the reserved inodes, the root, lost+found, ours
    assert first.read_bytes() == second.read_bytes()
    checked = subprocess.run(["e2fsck", "-fn", str(first)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    stat = subprocess.run(["debugfs", "-R", 'stat "/etc/a file"', str(first)],
                          capture_output=True, text=True).stdout
    assert stat.count("-- Wed Jan  1 00:00:00 2025") == 4, stat  # ctime atime mtime crtime


@pytest.mark.integration
def test_a_file_that_is_not_ext4_is_one_line_and_exit_1(tmp_path, capsys):
    image = tmp_path / "not.ext4"
    image.write_bytes(b"\0" * 65536)
    assert ext4dates.main([str(image), str(EPOCH)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ext4dates: {image}: ") and err.count("\n") == 1, err
