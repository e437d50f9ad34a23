"""Recipe engine: overhead against hand-written bash, and the value of checkpoints."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.timing import run_quiet, timed, verdict

ROOT = Path(__file__).resolve().parent.parent
MINROOT = ROOT / "tests" / "builder" / "minroot.py"
DEBIAN = ROOT / "tests" / "builder" / "recipes"
MACROSTEPS, MICROSTEPS = 20, 20
BUILD_ISO = [sys.executable, "-m", "builder.cli"]


def _overhead_recipe(d: Path, work_base: Path) -> Path:
    for m in range(MACROSTEPS):
        (d / f"m{m:02d}.yaml").write_text("".join(
            f"- u{u:02d}:\n    - exec_chroot: echo {m}-{u} >> /tmp/trace\n"
            for u in range(MICROSTEPS)))
    (d / "bootstrap.yaml").write_text(
        f"- populate:\n    - exec_current: {sys.executable} {MINROOT} $$workdir\n")
    steps = "".join(f"  - m{m:02d}\n" for m in range(MACROSTEPS))
    recipe = d / "overhead.yaml"
    recipe.write_text("global:\n  distrib: bench\n  arch: amd64\n  output: none\n"
                      f"  workdir_base: {work_base}\nsteps:\n  - bootstrap\n{steps}")
    return recipe


def _hand_script(root: Path) -> str:
    """What a person would write for the same work: mount once, then every command."""
    lines = ["set -e", f"R={root}", "mount -t proc proc $R/proc", "mount -t sysfs sys $R/sys",
             "mount --bind /dev $R/dev", "mount --bind /dev/pts $R/dev/pts",
             "mount -t tmpfs shm $R/dev/shm"]
    for m in range(MACROSTEPS):
        for u in range(MICROSTEPS):
            lines.append(f"chroot $R /bin/bash -eo pipefail -c 'echo {m}-{u} >> /tmp/trace'")
    return "\n".join(lines) + "\n"


def engine_overhead(tmp: Path) -> dict:
    work_base = tmp / "work"
    recipe = _overhead_recipe(tmp, work_base)
    workdir = work_base / "overhead"
    run_quiet([*BUILD_ISO, str(recipe), "--to", "bootstrap"], cwd=ROOT)
    engine = timed(lambda: run_quiet([*BUILD_ISO, str(recipe), "--workdir", str(workdir),
                                      "--from", "m00"], cwd=ROOT))
    hand_root = tmp / "hand"
    hand_root.mkdir()
    run_quiet([sys.executable, str(MINROOT), str(hand_root)])
    script = tmp / "hand.sh"
    script.write_text(_hand_script(hand_root))
    hand = timed(lambda: run_quiet(["unshare", "--mount", "--propagation", "private", "bash",
                                    str(script)]))
    ratio = engine / hand
    return {"engine_s": round(engine, 3), "hand_written_bash_s": round(hand, 3),
            "per_macrostep_overhead_ms": round((engine - hand) / MACROSTEPS * 1000, 1),
            "overhead_ratio": round(ratio, 2),
            "verdicts": [verdict("engine overhead (20x20 microsteps)", ratio, 1.5)]}


def last_checkpointed_step(recipe: Path) -> Path:
    """The file of the recipe's last macrostep that is checkpointed (`checkpoint: false` ones
    run again at every build, so editing them says nothing of the checkpoints)."""
    steps = yaml.safe_load(recipe.read_text())["steps"]
    names = [next(iter(s)) if isinstance(s, dict) else s for s in steps
             if not (isinstance(s, dict) and next(iter(s.values())).get("checkpoint") is False)]
    return recipe.parent / f"{names[-1]}.yaml"


def checkpoint_value(tmp: Path) -> dict:
    recipes = tmp / "recipes"
    shutil.copytree(DEBIAN, recipes)
    recipe = recipes / "debian-minimal.yaml"
    base = tmp / "cp-work"
    args = [*BUILD_ISO, str(recipe), f"--set=workdir_base={base}"]
    full = timed(lambda: run_quiet(args), repeat=1)
    edited = last_checkpointed_step(recipe)
    edited.write_text(edited.read_text() + "- edited:\n    - exec_current: echo edited\n")
    rebuild = timed(lambda: run_quiet(args), repeat=1)
    ratio = rebuild / full
    return {"full_build_s": round(full, 1), "edited_step": edited.stem,
            "rebuild_after_last_checkpointed_step_edit_s": round(rebuild, 1),
            "checkpoint_ratio": round(ratio, 2),
            "verdicts": [verdict(f"rebuild after editing {edited.stem}, the last checkpointed "
                                 "macrostep", ratio, 0.2)]}


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="oar-live-bench-", dir="/var/tmp") as d:
        tmp = Path(d)
        figures = engine_overhead(tmp)
        cp = checkpoint_value(tmp)
        verdicts = figures.pop("verdicts") + cp.pop("verdicts")
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
        return {**figures, **cp, "verdicts": verdicts}
