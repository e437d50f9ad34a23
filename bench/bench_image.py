"""Benchmark: the OAR Live ISO build against Debian's live-build, menu rebuilds, boot and RAM.

Measured in one run on this machine, all figures from this run:
- `ours_build_s`, `ours_iso_mb`: `build-iso` of the default recipe with `--no-checkpoint` into a
  temporary work directory (a real full build; the apt archives cached in
  /var/cache/oar-live/apt are warm after any earlier build);
- `live_build_s`, `live_build_iso_mb`: Debian's live-build (`lb build`, warm: its cache/ is
  kept in /var/cache/oar-live/live-build between runs and warmed first when empty or made for
  another configuration, `live_build_warmup_s`) on the same package set — the packages our
  recipe installs, read from `build-iso --dry-run`, minbase, no recommends, no firmware —
  with `--binary-images iso-hybrid --bootloaders syslinux,grub-efi`, zstd squashfs at our
  level, the host's Debian mirror. Targets: build time ratio ours/live-build <= 0.5, ISO size
  ratio <= 0.85 (MB = 10^6 bytes);
- `menu_rebuild_s`: a copy of the project built once with checkpoints
  (`full_build_with_checkpoints_s`), then only isolinux/menu.yaml's timeout edited and built
  again; ratio to that full build, target <= 0.2 (the rebuilt ISO's menu is checked to differ);
- `node_boot_to_login_s`, `node_used_mib`: the ISO booted under TCG (-m 1024, the ISO's kernel
  and initrd with `oar.role=node oar.timeout=0 oar.keymap=us`, the ISO as CD, user-mode
  network with no OAR server on it: the node's watcher keeps looking), time to the serial login
  prompt and `free -m` "used" once logged in; `node_used_mib_with_oar_node` after starting
  oar-node as a registered node would. Target: used < 400 MiB.
Temporary files live under /var/tmp and are removed at the end (live-build's chroot included).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from bench.timing import verdict
from boot.proc import CommandError, spawn
from boot.vcluster.cli import TCG
from boot.vcluster.plan import extract_boot_files
from boot.vcluster.qemu import VM, VMError, VMSpec
from boot.vcluster.remote import read_credentials

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "debian-bookworm-x86_64-oar-2.5-iso.yaml"
BUILD_ISO = [sys.executable, "-m", "builder.cli"]
PROJECT_PARTS = ("recipes", "isolinux", "autoconf", "boot")  # what the recipe reads
LB_CACHE = Path("/var/cache/oar-live/live-build")  # live-build's cache/, kept between runs
LB_ISO = "live-image-amd64.hybrid.iso"
HOST_SOURCES = Path("/etc/apt/sources.list.d")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9.+-]+")
NET = (("user,id=n0,restrict=on", "virtio-net-pci,netdev=n0"),)
BUILD_TIMEOUT_S = 1800
STOP_GRACE_S = 60
BUILD_TARGET, SIZE_TARGET, MENU_TARGET, NODE_RAM_TARGET_MIB = 0.5, 0.85, 0.2, 400


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and shows its last output."""


def _say(message: str) -> None:
    print(f"   .. {message}", flush=True)


def _run(argv: Sequence[str], log: Path, cwd: Path = ROOT,
         timeout: float = BUILD_TIMEOUT_S) -> float:
    """Run argv with its output appended to `log`; its wall time in seconds.

    The command gets its own process group, stopped whole on a timeout or an interrupt
    (SIGTERM, a minute for build-iso to unwind its namespaces, then SIGKILL).
    """
    started = time.monotonic()
    with log.open("ab") as out, spawn(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                      new_session=True, grace=STOP_GRACE_S) as proc:
        status = proc.wait(timeout)
    elapsed = time.monotonic() - started
    if status != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise BenchError(f"`{' '.join(map(str, argv))}` exited {status} after {elapsed:.0f} s;"
                         f" its output ends with:\n{tail}")
    return elapsed


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 1)


# ---- what our recipe installs, and the host's mirror ----------------------------------------


def recipe_packages(recipe: Path = RECIPE) -> list[str]:
    """The packages the recipe names: mmdebstrap's --include and every `apt-get install`."""
    proc = subprocess.run([*BUILD_ISO, str(recipe), "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"build-iso --dry-run failed: {proc.stderr.strip()}")
    text = proc.stdout.replace("\\\n", " ")
    names: list[str] = []
    for match in re.finditer(r"--include=(\S+)", text):
        names += match.group(1).split(",")
    for match in re.finditer(r"apt-get install ([^\n']*)", text):
        names += [w for w in match.group(1).split() if PACKAGE.fullmatch(w)]
    names = list(dict.fromkeys(names))
    if not {"oar-server", "postgresql", "live-boot", "systemd-sysv"} <= set(names):
        raise BenchError(f"the recipe's package list looks incomplete: {' '.join(names)}")
    return names


def host_mirrors(sources_dir: Path = HOST_SOURCES) -> tuple[str, str]:
    """(Debian archive URI, security archive URI) from the host's deb822 apt sources."""
    archive = security = ""
    for path in sorted(sources_dir.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if "deb" not in fields.get("Types", "").split() or not fields.get("URIs"):
                continue
            uri, suites = fields["URIs"].split()[0], fields.get("Suites", "").split()
            if any(s.endswith("-security") for s in suites):
                security = security or uri
            elif "debian" in uri:
                archive = archive or uri
    if not archive:
        raise BenchError(f"no Debian archive in {sources_dir}/*.sources")
    return archive, security or archive.rstrip("/") + "-security"


def squashfs_level(recipe: Path = RECIPE) -> str:
    options = str(yaml.safe_load(recipe.read_text())["global"]["squashfs_options"])
    match = re.search(r"-Xcompression-level\s+(\d+)", options)
    return match.group(1) if match else "15"


# ---- 1a. our full build -----------------------------------------------------------------------


def build_ours(recipe: Path, work: Path, *extra: str) -> tuple[float, Path]:
    """One build-iso run into `work` (workdir_base and out_dir); (seconds, the ISO)."""
    out = work / "out"
    argv = [*BUILD_ISO, str(recipe), "--non-interactive", f"--set=workdir_base={work / 'base'}",
            f"--set=out_dir={out}", *extra]
    seconds = _run(argv, work.with_suffix(".log"))
    iso = out / "oar-live.iso"
    if not iso.is_file():
        raise BenchError(f"build-iso succeeded but wrote no {iso}")
    return seconds, iso


def ours_full(tmp: Path) -> tuple[dict, Path]:
    work = tmp / "ours"
    work.mkdir()
    seconds, iso = build_ours(RECIPE, work, "--no-checkpoint")
    manifest = yaml.safe_load((work / "out" / "oar-live.manifest.yaml").read_text())
    return {"ours_build_s": round(seconds, 1), "ours_iso_mb": _mb(iso),
            "ours_packages": len(manifest.get("packages") or {})}, iso


# ---- 1b. live-build ---------------------------------------------------------------------------


def lb_config_args(archive: str, security: str, level: str) -> list[str]:
    return ["lb", "config", "--distribution", "bookworm", "--architecture", "amd64",
            "--binary-images", "iso-hybrid", "--bootloaders", "syslinux,grub-efi",
            "--chroot-squashfs-compression-type", "zstd",
            "--chroot-squashfs-compression-level", level,
            "--debootstrap-options", "--variant=minbase", "--apt-recommends", "false",
            "--firmware-chroot", "false", "--firmware-binary", "false",
            "--archive-areas", "main",
            "--mirror-bootstrap", archive, "--mirror-chroot", archive, "--mirror-binary", archive,
            "--mirror-chroot-security", security, "--mirror-binary-security", security]


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == str(path) or point.startswith(f"{path}/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Unmount whatever is left below `path` (a killed lb build's chroot), then delete it."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False)
    left = _mounts_under(path)
    if left:
        raise BenchError(f"{path} left in place: still mounted there: {', '.join(left)}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def live_build(tmp: Path, packages: list[str]) -> dict:
    if shutil.which("lb") is None:
        raise BenchError("live-build is not installed: apt-get install live-build")
    archive, security = host_mirrors()
    config = lb_config_args(archive, security, squashfs_level())
    stamp = hashlib.sha256("\n".join(config + packages).encode()).hexdigest()
    work = tmp / "live-build"
    work.mkdir()
    log = tmp / "live-build.log"
    _run(config, log, cwd=work, timeout=120)
    lists = work / "config" / "package-lists"
    (lists / "oar.list.chroot").write_text("\n".join(packages) + "\n")
    kept, stamp_file = LB_CACHE / "cache", LB_CACHE / "config.sha256"
    warm = kept.is_dir() and stamp_file.is_file() and stamp_file.read_text().strip() == stamp
    if not warm and LB_CACHE.exists():
        _remove_tree(LB_CACHE)  # empty, or made for another configuration or package list
    LB_CACHE.mkdir(parents=True, exist_ok=True)
    figures: dict = {"live_build_warmup_s": None}
    if kept.is_dir():
        kept.rename(work / "cache")
    try:
        if not warm:
            _say("live-build: warming its cache (first build)")
            figures["live_build_warmup_s"] = round(_run(["lb", "build"], log, cwd=work), 1)
            # `lb clean` (--all) keeps cache/ but removes the stage files, `config` included:
            # configured again, as live-build's manual does between builds.
            _run(["lb", "clean"], log, cwd=work, timeout=300)
            if not (work / "cache").is_dir():
                raise BenchError("lb build left no cache/ to keep")
            stamp_file.write_text(stamp + "\n")
            _run(config, log, cwd=work, timeout=120)
        _say("live-build: timed warm build")
        figures["live_build_s"] = round(_run(["lb", "build"], log, cwd=work), 1)
        iso = work / LB_ISO
        if not iso.is_file():
            raise BenchError(f"lb build succeeded but wrote no {LB_ISO}")
        figures["live_build_iso_mb"] = _mb(iso)
        listing = work / LB_ISO.replace(".hybrid.iso", ".packages")
        if listing.is_file():
            figures["live_build_packages"] = len(listing.read_text().splitlines())
        return figures
    finally:
        subprocess.run(["lb", "clean"], cwd=work, check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # unmounts the chroot's file systems
        if (work / "cache").is_dir() and not kept.exists():
            (work / "cache").rename(kept)


# ---- 2. rebuild after a boot menu edit --------------------------------------------------------


def _iso_file(iso: Path, inside: str, dest: Path) -> str:
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", inside,
                    str(dest)], check=True, capture_output=True)
    return dest.read_text()


def menu_rebuild(tmp: Path) -> dict:
    project = tmp / "project"
    for part in PROJECT_PARTS:
        shutil.copytree(ROOT / part, project / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    recipe = project / "recipes" / RECIPE.name
    work = tmp / "menu"
    work.mkdir()
    _say("menu: full build with checkpoints")
    full, iso = build_ours(recipe, work)
    before = _iso_file(iso, "/isolinux/isolinux.cfg", tmp / "isolinux-before.cfg")
    menu = project / "isolinux" / "menu.yaml"
    text = menu.read_text()
    found = re.search(r"^timeout:\s*(\d+)", text, re.M)
    if found is None:
        raise BenchError(f"{menu}: no `timeout:` line to edit")
    timeout = int(found.group(1))
    menu.write_text(re.sub(r"^timeout:\s*\d+", f"timeout: {timeout + 5}", text, count=1,
                           flags=re.M))
    _say(f"menu: rebuild after the menu's timeout went from {timeout} to {timeout + 5} s")
    rebuild, iso = build_ours(recipe, work)
    after = _iso_file(iso, "/isolinux/isolinux.cfg", tmp / "isolinux-after.cfg")
    if after == before:
        raise BenchError("the rebuilt ISO's isolinux.cfg did not change after the menu edit")
    return {"full_build_with_checkpoints_s": round(full, 1),
            "menu_rebuild_s": round(rebuild, 1), "menu_rebuild_ratio": round(rebuild / full, 2)}


# ---- 3. boot to login, RAM used ---------------------------------------------------------------


def _used_mib(vm: VM) -> int:
    _, out = vm.run("free -m", 60)
    for line in out.splitlines():
        if line.startswith("Mem:"):
            return int(line.split()[2])
    raise BenchError(f"no Mem: line in the guest's free -m:\n{out}")


def boot_node(iso: Path, tmp: Path) -> dict:
    rundir = tmp / "vm"
    kernel, initrd, base = extract_boot_files(iso, rundir / "boot")
    append = f"{base} console=ttyS0,115200n8 oar.role=node oar.timeout=0 oar.keymap=us"
    spec = VMSpec("node", rundir, kernel=kernel, initrd=initrd, append=append,
                  memory_mib=1024, accel=TCG, netdevs=NET,
                  extra_args=("-drive", f"file={iso},media=cdrom,readonly=on"))
    started = time.monotonic()
    with VM(spec) as vm:
        vm.wait_for(r"\blogin: ", 900)
        to_login = time.monotonic() - started
        vm.send("\n")  # getty prints its prompt again for login() to answer
        credentials = read_credentials(iso)
        vm.login(credentials.user, credentials.password, timeout=120)
        _, cmdline = vm.run("cat /proc/cmdline", 30)
        if "oar.role=node" not in cmdline:
            raise BenchError(f"the VM did not boot the node role: {cmdline}")
        time.sleep(10)  # let the boot's last services settle
        used = _used_mib(vm)
        status, _ = vm.run("sudo -n systemctl start oar-node", 120, check=False)
        time.sleep(5)
        with_node = _used_mib(vm) if status == 0 else None
    return {"boot_role": "node (no server on its network)",
            "node_boot_to_login_s": round(to_login, 1), "node_used_mib": used,
            "node_used_mib_with_oar_node": with_node}


# ---- the run ----------------------------------------------------------------------------------


def _measure(name: str, fn: Callable[[], dict], figures: dict, verdicts: list[str]) -> bool:
    """Run one part; its failure is recorded as a figure and a missed target, not raised."""
    try:
        figures.update(fn())
        return True
    except (BenchError, VMError, CommandError, OSError, subprocess.SubprocessError) as exc:
        figures[f"{name}_error"] = str(exc)[-3000:]
        verdicts.append(f"MISSED: {name} not measured: {str(exc).splitlines()[0]}")
        _say(f"{name} failed: {str(exc).splitlines()[0]}")
        return False


def run() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="oar-live-bench-image-", dir="/var/tmp"))
    figures: dict = {}
    verdicts: list[str] = []
    try:
        packages = recipe_packages()
        figures["same_packages_requested"] = len(packages)
        _say("ours: full build (--no-checkpoint)")
        built: list[Path] = []

        def ours() -> dict:
            result, iso = ours_full(tmp)
            built.append(iso)
            return result

        have_ours = _measure("ours_build", ours, figures, verdicts)
        have_lb = _measure("live_build", lambda: live_build(tmp, packages), figures, verdicts)
        if have_ours and have_lb:
            build = figures["ours_build_s"] / figures["live_build_s"]
            size = figures["ours_iso_mb"] / figures["live_build_iso_mb"]
            figures["build_time_ratio"] = round(build, 2)
            figures["iso_size_ratio"] = round(size, 2)
            verdicts.append(verdict("build time, ours / live-build (warm)", build, BUILD_TARGET))
            verdicts.append(verdict("ISO size, ours / live-build", size, SIZE_TARGET))
        if _measure("menu_rebuild", lambda: menu_rebuild(tmp), figures, verdicts):
            verdicts.append(verdict("rebuild after a boot menu edit / full build",
                                    figures["menu_rebuild_ratio"], MENU_TARGET))
        if built:
            _say("boot: node role under TCG")
            if _measure("boot", lambda: boot_node(built[0], tmp), figures, verdicts):
                used = max(figures["node_used_mib"],
                           figures["node_used_mib_with_oar_node"] or 0)
                status = "met" if used < NODE_RAM_TARGET_MIB else "MISSED"
                verdicts.append(f"{status}: node RAM used after boot {used} MiB"
                                f" (target < {NODE_RAM_TARGET_MIB} MiB)")
    finally:
        _remove_tree(tmp)
    return {**figures, "verdicts": verdicts}
