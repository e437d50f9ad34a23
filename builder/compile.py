"""Compile one macrostep into one bash script that runs all its microsteps without Python."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from builder.recipe import Command, CommandKind, Condition, Macrostep, Microstep
from builder.variables import Variables

# Markers the script prints on its own line: "\x1eBI begin 3\x1e", "\x1eBI fail 3 2 1\x1e".
MARK = "\x1eBI "

# Variables from the engine's environment that are not carried from one macrostep to the next.
ENGINE_ENV = ("BASH_ENV", "HOME", "LANG", "LC_ALL", "OLDPWD", "PATH", "PWD", "SHLVL", "TERM", "_",
              "http_proxy", "https_proxy", "no_proxy")

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PREAMBLE = r"""set -eEo pipefail
shopt -s inherit_errexit
__bi_micro=0
__bi_cmd=0
__bi_mark() { printf '\036BI %s\036\n' "$*"; }
__bi_begin() { __bi_micro=$1; __bi_cmd=0; __bi_mark begin "$1"; }
# A builtin, no process: the engine drops its own variables from the file (builder.envfile).
__bi_save_env() { export -p > "$__bi_env_out" || true; }
__bi_exit() {
  local rc=$?
  set +e
  trap - EXIT
  __bi_save_env
  if [ "$rc" -ne 0 ]; then
    __bi_mark fail "$__bi_micro" "$__bi_cmd" "$rc"
    [ "$__bi_micro" -gt 0 ] && exit "$__bi_micro"
  fi
  exit "$rc"
}
trap __bi_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
__bi_check_host() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "build-iso: '$1' is not installed on the host" >&2
  return 127
}
__bi_check_appliance() {
  chroot "$__bi_root" /bin/sh -c 'command -v "$1"' sh "$1" >/dev/null 2>&1 && return 0
  echo "build-iso: '$1' is not installed in the appliance" >&2
  return 127
}
__bi_mounted=0
# /proc, /sys, /dev, /dev/pts and a fresh /dev/shm, in that order, by one `mount` process
# (the table is written by the engine beside the script: $__bi_chroot_fstab).
__bi_mount_chroot() {
  [ "$__bi_mounted" = 1 ] && return 0
  local r=$__bi_root
  [ -d "$r/proc" ] && [ -d "$r/sys" ] && [ -d "$r/dev" ] || mkdir -p "$r/proc" "$r/sys" "$r/dev"
  mount --all --fstab "$__bi_chroot_fstab"
  __bi_mounted=1
}
# Host-side commands see the appliance without /proc, /sys, /dev mounted in it.
__bi_leave_chroot() {
  [ "$__bi_mounted" = 1 ] || return 0
  local r=$__bi_root
  # (a mount a chroot command removed itself is no reason to fail; `mount --all` skips the rest)
  umount -l "$r/dev/shm" "$r/dev/pts" "$r/dev" "$r/sys" "$r/proc" 2>/dev/null || true
  __bi_mounted=0
}
__bi_chroot() {
  __bi_mount_chroot
  PATH=__CHROOT_PATH__ HOME=/root chroot "$__bi_root" /bin/bash -eo pipefail -c "$1" </dev/null
}
__bi_write_file() {
  local mode=$1 path=/${2#/} content=$3
  if [ -n "$content" ] && [ "${content: -1}" != $'\n' ]; then content+=$'\n'; fi
  if [ -x "$__bi_root/bin/sh" ]; then
    # Through the appliance's own shell, so symlinks resolve inside the appliance.
    printf '%s' "$content" | chroot "$__bi_root" /bin/sh -c \
      'mkdir -p "$(dirname "$2")"; if [ "$1" = append ]; then cat >>"$2"; else cat >"$2"; fi' \
      sh "$mode" "$path"
  else
    mkdir -p "$(dirname "$__bi_root$path")"
    if [ "$mode" = append ]; then printf '%s' "$content" >>"$__bi_root$path"
    else printf '%s' "$content" >"$__bi_root$path"; fi
  fi
}
""".replace("__CHROOT_PATH__", CHROOT_PATH)


@dataclass(frozen=True)
class CommandSite:
    """Where one command of the compiled body comes from, for failure reports."""

    micro_index: int      # 1-based index in the macrostep
    cmd_index: int        # 1-based index in the microstep
    command: Command
    body_line: int        # first line of the command in the body


@dataclass(frozen=True)
class CompiledMacrostep:
    macro: Macrostep
    body: str
    first: int                    # index of the first microstep run (0-based)
    last: int                     # index after the last microstep run
    used_variables: frozenset[str]
    sites: tuple[CommandSite, ...]

    def site(self, micro_index: int, cmd_index: int) -> CommandSite | None:
        for s in self.sites:
            if s.micro_index == micro_index and s.cmd_index == cmd_index:
                return s
        return None


@dataclass(frozen=True)
class Runtime:
    """Where a compiled macrostep runs: paths the preamble needs."""

    root: Path            # appliance root (overlay mount point)
    cwd: Path
    env_in: Path | None   # variables persisted by earlier macrosteps
    env_out: Path
    lowers: tuple[Path, ...]   # top first
    upper: Path
    overlay_work: Path
    chroot_fstab: Path    # what exec_chroot mounts (see chroot_fstab())


def compile_macrostep(macro: Macrostep, variables: Variables, first: int = 0,
                      last: int | None = None) -> CompiledMacrostep:
    """The body of the script: markers and commands of microsteps [first, last)."""
    last = len(macro.microsteps) if last is None else last
    lines: list[str] = [f"# macrostep {macro.name} ({macro.path})"]
    used: set[str] = set()
    sites: list[CommandSite] = []
    for index in range(first, last):
        micro = macro.microsteps[index]
        unmet = _unmet(micro, variables, used)
        if unmet is not None:
            lines.append(f"# --- {macro.name}/{micro.name} skipped: not ({unmet})")
            continue
        lines.append(f"# --- {macro.name}/{micro.name} ({micro.path}:{micro.line})")
        lines.append(f"__bi_begin {index + 1}")
        for cmd_index, command in enumerate(micro.commands, start=1):
            lines.append(f"__bi_cmd={cmd_index}")
            sites.append(CommandSite(index + 1, cmd_index, command, len(lines) + 1))
            lines.extend(_command_lines(command, variables, used))
    lines.append("__bi_micro=0")
    body = "\n".join(lines) + "\n"
    return CompiledMacrostep(macro=macro, body=body, first=first, last=last,
                             used_variables=frozenset(variables.used_closure(used)),
                             sites=tuple(sites))


def _unmet(micro: Microstep, variables: Variables, used: set[str]) -> Condition | None:
    """The first `when` condition of the microstep that the variables do not meet."""
    for condition in micro.when:
        for name, accepted in condition.words:
            text = variables.substitute(f"$${{{name}}}", condition.path, condition.line, used)
            words = set(text.split()) or {""}  # an empty variable meets the word ""
            if not set(accepted) & words:
                return condition
    return None


def _command_lines(command: Command, variables: Variables, used: set[str]) -> list[str]:
    args = [variables.substitute(a, command.path, command.line, used) for a in command.args]
    q = shlex.quote
    match command.kind:
        case CommandKind.CHECK_CMD:
            return [f"__bi_check_host {q(args[0])}"]
        case CommandKind.CHECK_APPLIANCE_CMD:
            return [f"__bi_check_appliance {q(args[0])}"]
        case CommandKind.EXEC_CURRENT:
            return ["__bi_leave_chroot", 'cd "$__bi_cwd"', *args[0].rstrip("\n").splitlines()]
        case CommandKind.EXEC_APPLIANCE:
            return ["__bi_leave_chroot", 'cd "$__bi_root"', *args[0].rstrip("\n").splitlines()]
        case CommandKind.EXEC_CHROOT:
            return [f"__bi_chroot {q(args[0])}"]
        case CommandKind.APPEND_FILE:
            return [f"__bi_write_file append {q(args[0])} {q(args[1])}"]
        case CommandKind.WRITE_FILE:
            return [f"__bi_write_file write {q(args[0])} {q(args[1])}"]
        case CommandKind.SET_VAR:
            # The value reads as a bash double-quoted string: $var and $(...) expand.
            value = re.sub(r'(?<!\\)"', r'\\"', args[1])
            return [f'export {args[0]}="{value}"']
    raise AssertionError(command.kind)


def _fstab_path(path: Path) -> str:
    """A path as fstab(5) spells it: blanks and backslashes in octal."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in str(path))


def chroot_fstab(root: Path) -> str:
    """The table `mount --all` reads for exec_chroot: what a chroot needs, parents first."""
    r = Path(root)
    rows = [
        ("proc", r / "proc", "proc", "defaults"),
        ("sysfs", r / "sys", "sysfs", "defaults"),
        ("/dev", r / "dev", "none", "bind"),
        ("/dev/pts", r / "dev/pts", "none", "bind"),
        ("shm", r / "dev/shm", "tmpfs", "mode=1777"),
    ]
    return "".join(f"{src} {_fstab_path(dst)} {fstype} {opts} 0 0\n"
                   for src, dst, fstype, opts in rows)


def script_text(compiled: CompiledMacrostep, runtime: Runtime) -> str:
    """The whole script: runtime paths, overlay mount, helpers, then the body."""
    q = shlex.quote
    lowers = ":".join(str(p) for p in runtime.lowers)
    head = [
        "#!/bin/bash",
        f"# build-iso: macrostep {compiled.macro.name}, compiled; runs in its own mount and PID "
        "namespace",
        f"__bi_root={q(str(runtime.root))}",
        f"__bi_cwd={q(str(runtime.cwd))}",
        f"__bi_env_out={q(str(runtime.env_out))}",
        f"__bi_chroot_fstab={q(str(runtime.chroot_fstab))}",
    ]
    mount = (
        f"mount -t overlay build-iso -o "
        f"{q(f'lowerdir={lowers},upperdir={runtime.upper},workdir={runtime.overlay_work}')} "
        '"$__bi_root"'
    )
    env_in = f"source {q(str(runtime.env_in))}" if runtime.env_in else ": no earlier variables"
    return "\n".join(head) + "\n" + PREAMBLE + "\n".join([mount, env_in, ""]) + compiled.body
