"""A node takes the cluster's accounts from its server: the same names, UIDs and GIDs.

The server's list (autoconf.accounts, over the registration service with the cluster token) is
the only source: an entry is checked by `Account.from_json`, and one that clashes with this
node (a system account of that name, a name or UID another local account holds) is refused
with a one-line message and skipped; the others are made. An account is made without a
password (`*`: no password login, ssh keys from the shared home work) and without a home of its
own (the shared /home has it). Accounts this node made and the server no longer lists are
removed (never their home: it is the server's). What this node made is remembered in
MANAGED (the node's /etc lives in RAM, so does the list); the image's own accounts are never
touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoconf.accounts import FIRST_UID, Account, AccountError, read_groups, read_passwd
from boot import proc
from boot.files import write_if_changed

__all__ = ["MANAGED", "Plan", "apply", "plan", "sync"]

MANAGED = Path("run/oar-live/accounts.json")

Runner = Callable[..., Any]


@dataclass
class Plan:
    """What a node does with the server's list: accounts to make, to remove, and refusals."""

    add: list[Account] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # managed accounts that stay as they are


def read_managed(root: Path) -> set[str]:
    try:
        names = json.loads((root / MANAGED).read_text())
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def plan(served: Iterable[Any], root: Path = Path("/")) -> Plan:
    """Compare the server's entries with this node's accounts."""
    result = Plan()
    local = {e.name: e for e in read_passwd(root)}
    by_uid = {e.uid: e.name for e in local.values()}
    groups = read_groups(root)
    group_by_gid = {gid: name for name, (gid, _members) in groups.items()}
    managed = read_managed(root)
    wanted: dict[str, Account] = {}
    for entry in served:
        try:
            account = Account.from_json(entry)
        except AccountError as exc:
            result.refused.append(f"refused from the server: {exc}")
            continue
        wanted[account.name] = account
    for account in wanted.values():
        mine = local.get(account.name)
        if mine is not None:
            if mine.uid < FIRST_UID:
                result.refused.append(f"{account.name}: clashes with the system account of "
                                      f"that name (UID {mine.uid}): not taken")
            elif (mine.uid, mine.gid) != (account.uid, account.gid):
                if account.name in managed:  # the server's account changed: make it anew
                    result.remove.append(account.name)
                    result.add.append(account)
                else:
                    result.refused.append(f"{account.name}: this node has it with UID {mine.uid}"
                                          f" GID {mine.gid}, the server with UID {account.uid} "
                                          f"GID {account.gid}: not taken")
            elif account.name in managed:
                result.kept.append(account.name)
            continue
        if account.uid in by_uid:
            result.refused.append(f"{account.name}: UID {account.uid} is {by_uid[account.uid]}'s "
                                  "on this node: not taken")
            continue
        held = group_by_gid.get(account.gid)
        if held is not None and held != account.group:
            result.refused.append(f"{account.name}: GID {account.gid} is group {held}'s on "
                                  "this node: not taken")
            continue
        if account.group in groups and groups[account.group][0] != account.gid:
            result.refused.append(f"{account.name}: group {account.group} has GID "
                                  f"{groups[account.group][0]} on this node: not taken")
            continue
        result.add.append(account)
    result.remove += sorted(n for n in managed if n not in wanted and n in local)
    return result


def apply(todo: Plan, root: Path = Path("/"), run: Runner | None = None) -> list[str]:
    """Make and remove accounts as planned; the lines to report (refusals included)."""
    run = run or proc.run  # looked up now: tests replace boot.proc.run
    lines = list(todo.refused)
    managed = set(todo.kept) | (read_managed(root) - set(todo.remove))
    for name in todo.remove:
        result = run(["userdel", name], check=False, timeout=60)  # never -r: the home is shared
        if result.returncode == 0:
            managed.discard(name)
            lines.append(f"account {name} removed (the server no longer has it)")
        else:
            lines.append(f"account {name}: userdel failed: {(result.stderr or '').strip()}")
    groups = read_groups(root)
    for account in todo.add:
        try:
            if account.group not in groups:
                run(["groupadd", "--gid", str(account.gid), account.group], timeout=60)
            run(["useradd", "--uid", str(account.uid), "--gid", str(account.gid),
                 "--no-create-home", "--home-dir", account.home, "--shell", account.shell,
                 "--comment", account.gecos, "--password", "*", account.name], timeout=60)
        except proc.CommandError as exc:
            lines.append(f"account {account.name}: {exc}")
            continue
        managed.add(account.name)
        lines.append(f"account {account.name} added (UID {account.uid}, GID {account.gid})")
    write_if_changed(root / MANAGED, json.dumps(sorted(managed)) + "\n", 0o600)
    return lines


def sync(served: Iterable[Any], root: Path = Path("/"),
         run: Runner | None = None) -> list[str]:
    """Take the server's accounts; the lines to report (nothing when nothing changed)."""
    return apply(plan(served, root), root, run)
