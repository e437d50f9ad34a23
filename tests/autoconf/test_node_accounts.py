"""A node takes the server's accounts: made with the same UID and GID, clashes refused,
accounts the server dropped removed (never their shared home), the image's own left alone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from autoconf import node_accounts
from tests.autoconf.test_accounts import GROUP, PASSWD


def node_root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


def served(name: str, uid: int, gid: int | None = None, group: str | None = None) -> dict:
    return {"name": name, "uid": uid, "gid": gid or uid, "group": group or name, "gecos": "",
            "shell": "/bin/bash"}


class Shadow:
    """groupadd, useradd and userdel on the fake root's files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[list[str]] = []

    def __call__(self, argv, check=True, timeout=None, **_kw):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if argv[0] == "groupadd":
            with (self.root / "etc/group").open("a") as f:
                f.write(f"{argv[-1]}:x:{argv[2]}:\n")
        elif argv[0] == "useradd":
            uid, gid = argv[argv.index("--uid") + 1], argv[argv.index("--gid") + 1]
            with (self.root / "etc/passwd").open("a") as f:
                f.write(f"{argv[-1]}:x:{uid}:{gid}::/home/{argv[-1]}:/bin/bash\n")
        elif argv[0] == "userdel":
            lines = (self.root / "etc/passwd").read_text().splitlines(keepends=True)
            (self.root / "etc/passwd").write_text(
                "".join(ln for ln in lines if not ln.startswith(argv[-1] + ":")))
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_a_node_makes_the_servers_people_with_the_same_ids_and_no_password(tmp_path):
    root = node_root(tmp_path)
    run = Shadow(root)
    lines = node_accounts.sync([served("user", 1000), served("bob", 1001), served("carol", 1002)],
                               root, run)
    assert lines == ["account carol added (UID 1002, GID 1002)"]
    assert run.calls[0] == ["groupadd", "--gid", "1002", "carol"]
    useradd = run.calls[1]
    assert useradd[useradd.index("--password") + 1] == "*"
    assert "--no-create-home" in useradd and useradd[useradd.index("--home-dir") + 1] == (
        "/home/carol")
    assert json.loads((root / node_accounts.MANAGED).read_text()) == ["carol"]
    assert node_accounts.sync([served("carol", 1002)], root, run) == [], "nothing changes twice"
    assert len(run.calls) == 2


def test_clashes_with_this_node_are_refused_and_the_rest_taken(tmp_path):
    root = node_root(tmp_path)
    run = Shadow(root)
    lines = node_accounts.sync([
        served("postgres", 1005),            # a system account of that name
        served("bob", 1003),                 # bob is 1001 here
        served("dave", 1001),                # 1001 is bob's
        served("erin", 1004, 1000, "erin"),  # GID 1000 is group user's
        served("frank", 999),                # below the people's range
        {"name": "x;rm", "uid": 1009},       # not a name at all
        served("carol", 1002),
    ], root, run)
    assert lines[:6] == [
        "refused from the server: frank: uid 999 is outside the people's range 1000-59999 "
        "(below is the system's)",
        "refused from the server: account name 'x;rm' is not a user name (a-z, 0-9, _ and -, "
        "at most 32, not starting with a digit)",
        "postgres: clashes with the system account of that name (UID 105): not taken",
        "bob: this node has it with UID 1001 GID 1001, the server with UID 1003 GID 1003: "
        "not taken",
        "dave: UID 1001 is bob's on this node: not taken",
        "erin: GID 1000 is group user's on this node: not taken",
    ]
    assert lines[6:] == ["account carol added (UID 1002, GID 1002)"]
    assert [c[-1] for c in run.calls] == ["carol", "carol"]


def test_accounts_the_server_dropped_are_removed_but_not_their_home_nor_the_images(tmp_path):
    root = node_root(tmp_path)
    run = Shadow(root)
    node_accounts.sync([served("carol", 1002)], root, run)
    run.calls.clear()
    lines = node_accounts.sync([], root, run)  # the server rebooted: its accounts are gone
    assert lines == ["account carol removed (the server no longer has it)"]
    assert run.calls == [["userdel", "carol"]], "no -r: the home is the server's"
    assert "user:x:1000" in (root / "etc/passwd").read_text(), "the image's account stays"
    assert json.loads((root / node_accounts.MANAGED).read_text()) == []


def test_an_account_the_server_made_anew_is_made_anew(tmp_path):
    root = node_root(tmp_path)
    run = Shadow(root)
    node_accounts.sync([served("carol", 1002)], root, run)
    run.calls.clear()
    lines = node_accounts.sync([served("carol", 1003, 1002)], root, run)
    assert [c[0] for c in run.calls] == ["userdel", "useradd"]
    assert lines[-1] == "account carol added (UID 1003, GID 1002)"
