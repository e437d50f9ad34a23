"""The cluster's people: accounts made on the server that every node knows, same UID and GID.

`oar-live adduser NAME` (as root, on the server) makes an account with useradd: its home on the
shared /home, an ssh key pair whose public key its own authorized_keys trusts (the person
reaches every node from the server without a password), no password, no sudo;
`oar-live deluser NAME` removes it and its home. The server serves every account of the
people's range (UID and GID FIRST_UID..LAST_UID, the range of Debian's adduser and useradd, so
an account made with a plain `adduser` counts too) to the nodes at ACCOUNTS_PATH of the
registration service, with the cluster token; each node takes them (autoconf.node_accounts).
`Account.from_json` is the one check of an entry, on both sides.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autoconf.config import ConfigError, Role, read_config
from boot import proc

__all__ = [
    "ACCOUNTS_PATH",
    "FIRST_UID",
    "LAST_UID",
    "Account",
    "AccountError",
    "add_commands",
    "adduser",
    "deluser",
    "listing",
    "people",
    "read_passwd",
]

ACCOUNTS_PATH = "/v1/accounts"
FIRST_UID = 1000  # Debian's FIRST_UID / UID_MIN
LAST_UID = 59999  # Debian's LAST_UID / UID_MAX
MAX_ACCOUNTS = 10000
NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # Debian's NAME_REGEX, without the trailing $
SHELL = re.compile(r"^/[A-Za-z0-9/_.+-]{1,63}$")
MAX_GECOS = 128
PASSWD = Path("etc/passwd")
GROUP = Path("etc/group")
ADMIN_GROUP = "sudo"  # an account in it administers the machine: deluser leaves it alone
DEFAULT_SHELL = "/bin/bash"
SERVER_ROLES = (Role.SERVER, Role.SOLO)

Runner = Callable[..., Any]


class AccountError(ValueError):
    """An account that is refused or a command that failed; the message says which and why."""


@dataclass(frozen=True)
class Account:
    """One person: what a node needs to run their jobs as the same UID and GID."""

    name: str
    uid: int
    gid: int
    group: str
    gecos: str
    shell: str

    @property
    def home(self) -> str:
        return f"/home/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Account:
        """A checked entry; AccountError says what is wrong with it."""
        if not isinstance(data, dict):
            raise AccountError("an account entry is not a JSON object")
        name = data.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise AccountError(f"account name {str(name)[:40]!r} is not a user name "
                               "(a-z, 0-9, _ and -, at most 32, not starting with a digit)")
        group = data.get("group")
        if not isinstance(group, str) or not NAME.match(group):
            raise AccountError(f"{name}: group name {str(group)[:40]!r} is not a group name")
        for key in ("uid", "gid"):
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise AccountError(f"{name}: {key} is not a number")
            if not FIRST_UID <= value <= LAST_UID:
                raise AccountError(f"{name}: {key} {value} is outside the people's range "
                                   f"{FIRST_UID}-{LAST_UID} (below is the system's)")
        gecos = data.get("gecos", "")
        if (not isinstance(gecos, str) or len(gecos) > MAX_GECOS
                or any(c in gecos for c in ":\n\r\0")):
            raise AccountError(f"{name}: the full name is not one line of at most "
                               f"{MAX_GECOS} characters without ':'")
        shell = data.get("shell", DEFAULT_SHELL)
        if not isinstance(shell, str) or not SHELL.match(shell):
            raise AccountError(f"{name}: shell {str(shell)[:40]!r} is not an absolute path")
        return cls(name, data["uid"], data["gid"], group, gecos, shell)


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


def read_passwd(root: Path = Path("/")) -> list[PasswdEntry]:
    """The entries of root/etc/passwd (malformed lines skipped)."""
    entries = []
    for line in (root / PASSWD).read_text().splitlines():
        fields = line.split(":")
        if len(fields) != 7 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        entries.append(PasswdEntry(fields[0], int(fields[2]), int(fields[3]), fields[4],
                                   fields[5], fields[6]))
    return entries


def read_groups(root: Path = Path("/")) -> dict[str, tuple[int, list[str]]]:
    """group name -> (gid, members) from root/etc/group."""
    groups = {}
    for line in (root / GROUP).read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 4 and fields[2].isdigit():
            groups[fields[0]] = (int(fields[2]), [m for m in fields[3].split(",") if m])
    return groups


def people(root: Path = Path("/")) -> list[Account]:
    """The accounts of the people's range, as the server serves them (invalid ones left out)."""
    names = {gid: name for name, (gid, _members) in read_groups(root).items()}
    found = []
    for entry in read_passwd(root):
        if not FIRST_UID <= entry.uid <= LAST_UID:
            continue
        try:
            found.append(Account.from_json({
                "name": entry.name, "uid": entry.uid, "gid": entry.gid,
                "group": names.get(entry.gid, ""), "gecos": entry.gecos, "shell": entry.shell,
            }))  # fmt: skip
        except AccountError:
            continue  # e.g. a group without an entry: no node can make it as it is
    return found[:MAX_ACCOUNTS]


def listing(root: Path = Path("/")) -> dict[str, Any]:
    """The body of GET ACCOUNTS_PATH."""
    return {"accounts": [a.to_json() for a in people(root)]}


# ----------------------------------------------------------------------------- the commands


def _on_the_server(root: Path) -> None:
    try:
        role = read_config(root).role
    except ConfigError as exc:
        raise AccountError(f"this machine has no OAR Live role yet ({exc})") from None
    if role not in SERVER_ROLES:
        raise AccountError(f"this machine is a {role.value}: run it on the OAR Live server, "
                           "whose accounts every node takes")


def _find(name: str, root: Path) -> PasswdEntry | None:
    return next((e for e in read_passwd(root) if e.name == name), None)


def adduser(name: str, root: Path = Path("/"), run: Runner = proc.run,
            uid: int | None = None, gecos: str = "") -> Account:
    """Make `name` a person of the cluster (on the server); the account as nodes get it."""
    probe = {"name": name, "group": name, "uid": uid or FIRST_UID, "gid": uid or FIRST_UID,
             "gecos": gecos, "shell": DEFAULT_SHELL}
    Account.from_json(probe)  # the name, the UID asked for and the full name, before anything
    _on_the_server(root)
    existing = _find(name, root)
    if existing is not None:
        kind = "a system account" if existing.uid < FIRST_UID else "an account"
        raise AccountError(f"{name} is already {kind} (UID {existing.uid})")
    if name in read_groups(root):
        raise AccountError(f"{name} is already a group: choose another name")
    argv = ["useradd", "--create-home", "--user-group", "--shell", DEFAULT_SHELL,
            "--comment", gecos]
    if uid is not None:
        argv += ["--uid", str(uid)]
    try:
        run([*argv, name], timeout=60)
    except proc.CommandError as exc:
        raise AccountError(f"useradd {name}: {exc}") from None
    account = next((a for a in people(root) if a.name == name), None)
    if account is None:
        run(["userdel", "--remove", name], timeout=60, check=False)
        raise AccountError(f"useradd gave {name} an account outside the people's range "
                           f"({FIRST_UID}-{LAST_UID}): removed it again")
    _ssh_key(account, root, run)
    return account


def _ssh_key(account: Account, root: Path, run: Runner) -> None:
    """A key pair in ~/.ssh that ~/.ssh/authorized_keys trusts: the shared home carries it to
    every node."""
    ssh = root / account.home.lstrip("/") / ".ssh"
    key = ssh / "id_ed25519"
    try:
        run(["runuser", "-u", account.name, "--", "sh", "-c",
             f"umask 077 && mkdir -p {ssh} && ssh-keygen -q -t ed25519 -N '' "
             f"-C {account.name}@oar-live -f {key}"], timeout=60)
    except proc.CommandError as exc:
        raise AccountError(f"{account.name}: making the ssh key failed: {exc}") from None
    authorized = ssh / "authorized_keys"
    authorized.write_text(key.with_name(key.name + ".pub").read_text())
    os.chown(authorized, account.uid, account.gid)
    authorized.chmod(0o600)


def deluser(name: str, root: Path = Path("/"), run: Runner = proc.run) -> None:
    """Remove the person `name` and their home (on the server); nodes drop them next."""
    if not NAME.match(name):
        raise AccountError(f"{name[:40]!r} is not a user name")
    _on_the_server(root)
    existing = _find(name, root)
    if existing is None:
        raise AccountError(f"{name} has no account here")
    if not FIRST_UID <= existing.uid <= LAST_UID:
        raise AccountError(f"{name} is a system account (UID {existing.uid}): left alone")
    if name in read_groups(root).get(ADMIN_GROUP, (0, []))[1]:
        raise AccountError(f"{name} administers this machine (group {ADMIN_GROUP}): "
                           "remove it by hand with userdel if you mean it")
    try:
        run(["userdel", "--remove", name], timeout=60)
    except proc.CommandError as exc:
        raise AccountError(f"userdel {name}: {exc}") from None


# ----------------------------------------------------------------------------- oar-live


def _run_adduser(args: argparse.Namespace) -> int:
    try:
        account = adduser(args.name, args.root, uid=args.uid, gecos=args.comment)
    except (AccountError, OSError) as exc:
        print(f"oar-live adduser: {exc}", file=sys.stderr)
        return 1
    print(f"{account.name}: UID {account.uid}, GID {account.gid} ({account.group}), home "
          f"{account.home}, an ssh key that every node accepts; no password (set one with "
          f"`passwd {account.name}` for logins on this server), no sudo. Every node has it "
          "after its watcher's next poll.")
    return 0


def _run_deluser(args: argparse.Namespace) -> int:
    try:
        deluser(args.name, args.root)
    except (AccountError, OSError) as exc:
        print(f"oar-live deluser: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: removed with its home; every node drops it after its watcher's "
          "next poll.")
    return 0


def add_commands(subparsers: Any) -> None:
    """`oar-live adduser` and `oar-live deluser`."""
    add = subparsers.add_parser("adduser", help="make a person an OAR user on every node")
    add.add_argument("name")
    add.add_argument("--uid", type=int, default=None,
                     help=f"the UID ({FIRST_UID}-{LAST_UID}); default: the next free one")
    add.add_argument("--comment", default="", help="the person's full name")
    add.set_defaults(run=_run_adduser)
    remove = subparsers.add_parser("deluser", help="remove a person and their home")
    remove.add_argument("name")
    remove.set_defaults(run=_run_deluser)
    for parser in (add, remove):
        parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
