"""Benchmark: the trixie image (OAR 2.6, the default) against the bookworm one (OAR 2.5).

Both measured in one run on this machine, the same way, bookworm being the baseline:
- `build_s`: `build-iso RECIPE --no-checkpoint` into a temporary work directory (a full build,
  cold checkpoints; the apt archives in /var/cache/oar-live/apt are warm after any build);
- `iso_mb`: the ISO it wrote (MB = 10^6 bytes);
- `boot_to_alive_s`: the ISO's kernel and initrd booted under TCG (2 CPUs, 1536 MiB, the ISO
  as CD, user-mode network) with `oar.role=solo oar.timeout=0 oar.keymap=us`, from qemu's start
  until `oar-autoconf status` says the cluster is ready (the machine's resources Alive; the
  serial login included, a few seconds for both);
- `used_mib`: `free -m` "used" 10 s later;
- `job_s`: the first job after boot, `oarsub -l core=1 true` as the job account, from the
  submission to `oarstat` saying Terminated (polled every 2 s).
The three boot figures are medians of BOOTS boots of each image, taken in turn (each boot's
figures are listed too, `..._runs`). Ratios trixie / bookworm; target <= 1.10 each: trixie
no slower and no larger by more than 10 %.
Temporary files live under /var/tmp and are removed at the end.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_image import (
    NET,
    BenchError,
    _mb,
    _measure,
    _remove_tree,
    _say,
    _used_mib,
    build_ours,
)
from bench.timing import verdict
from boot.vcluster.cli import TCG
from boot.vcluster.plan import extract_boot_files
from boot.vcluster.qemu import VM, VMSpec
from boot.vcluster.remote import read_credentials

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {  # the baseline first
    "bookworm": ROOT / "recipes" / "debian-bookworm-x86_64-oar-2.5-iso.yaml",
    "trixie": ROOT / "recipes" / "debian-trixie-x86_64-oar-2.6-iso.yaml",
}
BOOT_FIGURES = ("boot_to_alive_s", "used_mib", "job_s")
FIGURES = ("build_s", "iso_mb", *BOOT_FIGURES)
TARGET = 1.10
# Boots per image, in turn (bookworm, trixie, bookworm, ...): the medians are compared (one boot
# of each under TCG differed by up to 30 % between two runs on the same idle machine).
BOOTS = int(os.environ.get("OAR_BENCH_DISTRIBUTION_BOOTS", "3"))
MEMORY_MIB = 1536
ALIVE_TIMEOUT_S = 900
JOB_TIMEOUT_S = 600


def build(name: str, tmp: Path) -> tuple[dict, Path]:
    work = tmp / name
    work.mkdir()
    seconds, iso = build_ours(RECIPES[name], work, "--no-checkpoint")
    return {"build_s": round(seconds, 1), "iso_mb": _mb(iso)}, iso


def _job_seconds(vm: VM) -> float:
    started = time.monotonic()
    _, out = vm.run("cd && oarsub -l core=1 true", 180)
    found = re.search(r"OAR_JOB_ID=(\d+)", out)
    if found is None:
        raise BenchError(f"oarsub printed no job id:\n{out}")
    while time.monotonic() - started < JOB_TIMEOUT_S:
        _, state = vm.run(f"oarstat -s -j {found.group(1)}", 90, check=False)
        if re.search(r"(Terminated|Error)\s*$", state):
            if not state.endswith("Terminated"):
                raise BenchError(f"the job ended {state}")
            return time.monotonic() - started
        time.sleep(2)
    raise BenchError(f"the job did not end within {JOB_TIMEOUT_S} s")


def boot_solo(name: str, iso: Path, tmp: Path) -> dict:
    rundir = tmp / f"{name}-vm"
    kernel, initrd, base = extract_boot_files(iso, rundir / "boot")
    append = f"{base} console=ttyS0,115200n8 oar.role=solo oar.timeout=0 oar.keymap=us"
    spec = VMSpec(name, rundir, kernel=kernel, initrd=initrd, append=append,
                  memory_mib=MEMORY_MIB, accel=TCG, netdevs=NET,
                  extra_args=("-drive", f"file={iso},media=cdrom,readonly=on"))
    started = time.monotonic()
    with VM(spec) as vm:
        vm.wait_for(r"\blogin: ", ALIVE_TIMEOUT_S)
        vm.send("\n")  # getty prints its prompt again for login() to answer
        credentials = read_credentials(iso)
        vm.login(credentials.user, credentials.password, timeout=120)
        while vm.run("sudo -n oar-autoconf status", 120, check=False)[0] != 0:
            if time.monotonic() - started > ALIVE_TIMEOUT_S:
                raise BenchError(f"{name}: not Alive within {ALIVE_TIMEOUT_S} s")
            time.sleep(2)
        alive = time.monotonic() - started
        time.sleep(10)  # let the boot's last services settle
        used = _used_mib(vm)
        job = _job_seconds(vm)
    return {"boot_to_alive_s": round(alive, 1), "used_mib": used, "job_s": round(job, 1)}


def run() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="oar-live-bench-distributions-", dir="/var/tmp"))
    figures: dict = {}
    verdicts: list[str] = []
    try:
        isos: dict[str, Path] = {}
        for name in RECIPES:

            def built(name: str = name) -> dict:
                result, isos[name] = build(name, tmp)
                _say(f"{name}: {result}")
                return {f"{name}_{key}": value for key, value in result.items()}

            _say(f"{name}: full build (--no-checkpoint)")
            _measure(f"{name}_build", built, figures, verdicts)
        runs: dict[str, list[dict]] = {name: [] for name in isos}
        for round_ in range(1, BOOTS + 1):
            for name in isos:  # in turn, so that a slow spell of the machine falls on both

                def booted(name: str = name, round_: int = round_) -> dict:
                    runs[name].append(boot_solo(name, isos[name], tmp))
                    _say(f"{name}, boot {round_} of {BOOTS}: {runs[name][-1]}")
                    return {}

                _say(f"{name}: solo boot to Alive and a job, under TCG ({round_}/{BOOTS})")
                _measure(f"{name}_boot_{round_}", booted, figures, verdicts)
        for name, results in runs.items():
            for key in BOOT_FIGURES:
                values = [r[key] for r in results]
                if values:
                    figures[f"{name}_{key}"] = statistics.median(values)
                    figures[f"{name}_{key}_runs"] = values
        for key in FIGURES:
            new, old = figures.get(f"trixie_{key}"), figures.get(f"bookworm_{key}")
            if new is None or not old:
                continue
            ratio = new / old
            figures[f"{key}_ratio"] = round(ratio, 2)
            verdicts.append(verdict(f"{key}, trixie / bookworm", ratio, TARGET))
    finally:
        _remove_tree(tmp)
    return {**figures, "verdicts": verdicts}
