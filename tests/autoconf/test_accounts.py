"""The cluster's accounts on the server: what is served, what is refused, adduser and deluser,
and the registration service's accounts endpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from autoconf import accounts, oarlive
from autoconf.accounts import Account, AccountError
from autoconf.config import Config, Role, write_config
from autoconf.registry import Registry
from tests.autoconf.fakenodes import get, serving
from tests.autoconf.test_registry import TOKEN, FakeOar, settings

PASSWD = """root:x:0:0:root:/root:/bin/bash
postgres:x:105:110:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash
user:x:1000:1000::/home/user:/bin/bash
bob:x:1001:1001:Bob B:/home/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
broken line
"""
GROUP = "root:x:0:\nsudo:x:27:user\npostgres:x:110:\nuser:x:1000:\nbob:x:1001:\n"


def machine(tmp_path: Path, role: Role = Role.SERVER) -> Path:
    (tmp_path / "etc").mkdir(parents=True)
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    write_config(Config(role=role), tmp_path)
    return tmp_path


def entry(**changes) -> dict:
    good = {"name": "carol", "uid": 1002, "gid": 1002, "group": "carol", "gecos": "",
            "shell": "/bin/bash"}
    return {**good, **changes}


def test_the_server_serves_the_people_range_only(tmp_path):
    root = machine(tmp_path)
    assert [(a.name, a.uid, a.gid, a.group) for a in accounts.people(root)] == [
        ("user", 1000, 1000, "user"), ("bob", 1001, 1001, "bob")]
    body = accounts.listing(root)
    assert body["accounts"][1] == {"name": "bob", "uid": 1001, "gid": 1001, "group": "bob",
                                   "gecos": "Bob B", "shell": "/bin/sh"}


@pytest.mark.parametrize("changes, why", [
    ({"uid": 999}, "uid 999 is outside the people's range"),
    ({"gid": 0}, "gid 0 is outside"),
    ({"uid": 60000}, "outside"),
    ({"uid": True}, "uid is not a number"),
    ({"name": "Root"}, "is not a user name"),
    ({"name": "-rf"}, "is not a user name"),
    ({"name": "a" * 33}, "is not a user name"),
    ({"group": "x:y"}, "is not a group name"),
    ({"gecos": "a:b"}, "full name"),
    ({"gecos": "a\nroot::0:0::/:/bin/sh"}, "full name"),
    ({"shell": "bash"}, "not an absolute path"),
])
def test_bad_entries_are_refused_with_the_reason(changes, why):
    with pytest.raises(AccountError, match=why):
        Account.from_json(entry(**changes))
    assert Account.from_json(entry()).home == "/home/carol"


class Useradd:
    """useradd, userdel and runuser ssh-keygen acting on the fake root's files."""

    def __init__(self, root: Path, next_uid: int = 1002) -> None:
        self.root = root
        self.next_uid = next_uid
        self.calls: list[list[str]] = []

    def __call__(self, argv, check=True, timeout=None, **_kw):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if argv[0] == "useradd":
            name = argv[-1]
            uid = int(argv[argv.index("--uid") + 1]) if "--uid" in argv else self.next_uid
            with (self.root / "etc/passwd").open("a") as f:
                f.write(f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n")
            with (self.root / "etc/group").open("a") as f:
                f.write(f"{name}:x:{uid}:\n")
            (self.root / "home" / name).mkdir(parents=True)
        elif argv[0] == "runuser":
            key = Path(argv[-1].split(" -f ")[1])
            key.parent.mkdir(mode=0o700, exist_ok=True)
            key.write_text("PRIVATE\n")
            key.with_name(key.name + ".pub").write_text("ssh-ed25519 AAAA carol@oar-live\n")
        elif argv[0] == "userdel":
            lines = (self.root / "etc/passwd").read_text().splitlines(keepends=True)
            (self.root / "etc/passwd").write_text(
                "".join(ln for ln in lines if not ln.startswith(argv[-1] + ":")))
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_adduser_makes_a_person_with_a_key_every_node_accepts(tmp_path, monkeypatch):
    root = machine(tmp_path)
    run = Useradd(root)
    monkeypatch.setattr(accounts.os, "chown", lambda *a: None)  # not root in unit tests
    account = accounts.adduser("carol", root, run, gecos="Carol C")
    assert (account.name, account.uid, account.gid, account.group) == ("carol", 1002, 1002,
                                                                       "carol")
    useradd = run.calls[0]
    assert useradd[:2] == ["useradd", "--create-home"] and "sudo" not in " ".join(useradd)
    assert useradd[useradd.index("--comment") + 1] == "Carol C"
    ssh = root / "home/carol/.ssh"
    assert (ssh / "authorized_keys").read_text() == (ssh / "id_ed25519.pub").read_text()
    assert (ssh / "authorized_keys").stat().st_mode & 0o777 == 0o600
    assert run.calls[1][:4] == ["runuser", "-u", "carol", "--"], "the key is the person's"
    assert "carol" in [a.name for a in accounts.people(root)]


@pytest.mark.parametrize("name, uid, why", [
    ("postgres", None, "postgres is already a system account"),
    ("bob", None, "bob is already an account"),
    ("sudo", None, "already a group"),
    ("carol", 500, "uid 500 is outside the people's range"),
    ("Carol", None, "is not a user name"),
])
def test_adduser_refuses_clashes_and_bad_names_before_anything(tmp_path, name, uid, why):
    root = machine(tmp_path)
    run = Useradd(root)
    with pytest.raises(AccountError, match=why):
        accounts.adduser(name, root, run, uid=uid)
    assert run.calls == []


def test_accounts_are_made_on_the_server_only(tmp_path):
    root = machine(tmp_path, Role.NODE)
    with pytest.raises(AccountError, match="this machine is a node: run it on the OAR Live"):
        accounts.adduser("carol", root, Useradd(root))


def test_adduser_undoes_an_account_useradd_made_outside_the_range(tmp_path):
    root = machine(tmp_path)
    run = Useradd(root, next_uid=60001)
    with pytest.raises(AccountError, match="outside the people's range"):
        accounts.adduser("carol", root, run)
    assert run.calls[-1] == ["userdel", "--remove", "carol"]


def test_deluser_removes_a_person_but_not_an_administrator_or_a_system_account(tmp_path):
    root = machine(tmp_path)
    run = Useradd(root)
    accounts.deluser("bob", root, run)
    assert run.calls == [["userdel", "--remove", "bob"]]
    for name, why in (("user", "administers this machine"), ("postgres", "system account"),
                      ("bob", "bob has no account here")):
        with pytest.raises(AccountError, match=why):
            accounts.deluser(name, root, run)
    assert len(run.calls) == 1


def test_oar_live_says_why_it_refuses_in_one_line(tmp_path, capsys):
    root = machine(tmp_path)
    assert oarlive.main(["adduser", "postgres", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err == "oar-live adduser: postgres is already a system account (UID 105)\n"
    assert oarlive.main(["deluser", "user", "--root", str(root)]) == 1
    assert capsys.readouterr().err.startswith("oar-live deluser: user administers")
    with pytest.raises(SystemExit):
        oarlive.main([])


def test_the_registration_service_serves_the_accounts_with_the_token(tmp_path):
    root = machine(tmp_path / "m")
    registry = Registry(settings(tmp_path), FakeOar(), accounts_root=root)
    with serving(registry) as port:
        assert get(port, accounts.ACCOUNTS_PATH, None)[0] == 401
        status, answer = get(port, accounts.ACCOUNTS_PATH, TOKEN)
    assert status == 200
    assert answer == json.loads(json.dumps(accounts.listing(root)))
    assert [a["name"] for a in answer["accounts"]] == ["user", "bob"]
