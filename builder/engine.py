"""Run a recipe: restore checkpoints, run each macrostep's script, stop where the user asked."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from builder.checkpoint import CheckpointStore, project_root, step_key
from builder.compile import (
    PREAMBLE,
    CompiledMacrostep,
    Runtime,
    chroot_fstab,
    compile_macrostep,
    script_text,
)
from builder.envfile import keep_recipe_variables
from builder.errors import BuildFailed, Interrupted, RecipeError
from builder.namespace import ScriptResult, ScriptRun, run_interactive
from builder.progress import Progress
from builder.recipe import BUILTIN_VARIABLES, MAX_MICROSTEPS, Macrostep, Recipe
from builder.variables import Variables


@dataclass(frozen=True)
class StepRef:
    macro: str
    micro: str | None = None

    def __str__(self) -> str:
        return f"{self.macro}/{self.micro}" if self.micro else self.macro


def parse_step_ref(text: str, recipe: Recipe, option: str) -> StepRef:
    macro, _, micro = text.partition("/")
    try:
        step = recipe.macrostep(macro)
    except KeyError:
        names = ", ".join(m.name for m in recipe.macrosteps)
        raise RecipeError(f"{option} {text}: no macrostep '{macro}' (steps: {names})",
                          recipe.path) from None
    if micro:
        try:
            step.index_of(micro)
        except KeyError:
            names = ", ".join(m.name for m in step.microsteps)
            raise RecipeError(f"{option} {text}: macrostep '{macro}' has no microstep '{micro}' "
                              f"(it has: {names})", recipe.path) from None
    return StepRef(macro, micro or None)


@dataclass(frozen=True)
class BuildOptions:
    workdir: Path | None = None
    start: StepRef | None = None          # --from
    stop_after: StepRef | None = None     # --to
    breakpoint: StepRef | None = None
    checkpoints: bool = True
    interactive: bool = False
    cwd: Path = field(default_factory=Path.cwd)
    command_line: str = "build-iso"       # how the user called us, for resume hints


class Workspace:
    """A build's work directory: layers, variables, scripts, log and progress state."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.rootfs = directory / "rootfs"
        self.base = directory / "base"
        self.layers = directory / "layers"
        self.overlay_work = directory / "overlay-work"
        self.env = directory / "env"
        self.scripts = directory / "scripts"
        self.log = directory / "build.log"
        self.state_file = directory / "state.json"
        self.report = directory / "report.txt"  # lines the scripts leave for the user
        self._lock = None

    def open(self) -> None:
        # Overlay mount options are separated by ',' and ':': check before creating anything.
        if any(ch in str(self.dir) for ch in ",:"):
            raise RecipeError(f"work directory '{self.dir}' may not contain ',' or ':'")
        for d in (self.dir, self.rootfs, self.base, self.layers, self.overlay_work, self.env,
                  self.scripts):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = (self.dir / ".lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecipeError(f"another build-iso is using {self.dir}") from None

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()   # releases the flock
            self._lock = None

    def state(self) -> dict:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"steps": {}}

    def save_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(tmp, self.state_file)

    def layer_dir(self, index: int, name: str) -> Path:
        return self.layers / f"{index:02d}-{name}"


@dataclass
class StepState:
    """What a finished (or partly run) macrostep left: its layer and its variables."""

    layer: Path
    env: Path
    key: str | None = None
    next_micro: int | None = None   # set when partial: index of the microstep to resume at

    def to_json(self) -> dict:
        return {"layer": str(self.layer), "env": str(self.env), "key": self.key,
                "next_micro": self.next_micro}

    @classmethod
    def from_json(cls, d: dict) -> StepState:
        return cls(Path(d["layer"]), Path(d["env"]), d.get("key"), d.get("next_micro"))


class Engine:
    def __init__(self, recipe: Recipe, options: BuildOptions, progress: Progress):
        self.recipe = recipe
        self.options = options
        self.progress = progress
        workdir_base = Path(Variables(recipe.variables, recipe.variable_lines, recipe.path,
                                      self._builtins(Path("/nonexistent"))).resolve("workdir_base"))
        if not workdir_base.is_absolute():
            workdir_base = options.cwd / workdir_base
        self.workdir_base = workdir_base
        self.workspace = Workspace(options.workdir or workdir_base / recipe.name)
        self.variables = Variables(recipe.variables, recipe.variable_lines, recipe.path,
                                   self._builtins(self.workspace.dir))
        self.store = CheckpointStore(workdir_base / "checkpoints")

    def _builtins(self, workdir: Path) -> dict[str, str]:
        return {"workdir": str(workdir / "rootfs"), "build_dir": str(workdir),
                "recipe_dir": str(self.recipe.dir), "recipe_name": self.recipe.name,
                "cwd": str(self.options.cwd), "python": sys.executable}

    # --- planning -------------------------------------------------------------------------

    def compile_all(self) -> list[CompiledMacrostep]:
        """Compile every macrostep (checks every variable before anything runs)."""
        return [compile_macrostep(m, self.variables) for m in self.recipe.macrosteps]

    def keys(self) -> list[str]:
        """Checkpoint key of each macrostep, independent of where the project and work are."""
        placeholders = {name: f"@{name}@" for name in BUILTIN_VARIABLES}
        placeholders["recipe_name"] = self.recipe.name
        text = Variables(self.recipe.variables, self.recipe.variable_lines, self.recipe.path,
                         placeholders)
        # Paths of the project (under the recipe's folder) are followed to hash their content;
        # outputs (under $$cwd, $$workdir, $$build_dir) stay placeholders and are not.
        sources = Variables(self.recipe.variables, self.recipe.variable_lines, self.recipe.path,
                            {**placeholders, "recipe_dir": str(self.recipe.dir)})
        root = project_root(self.recipe.dir)
        keys, previous = [], "build-iso/1"
        for macro in self.recipe.macrosteps:
            previous = step_key(previous, compile_macrostep(macro, text), sources, root)
            keys.append(previous)
        return keys

    # --- running --------------------------------------------------------------------------

    def run(self) -> None:
        compiled = self.compile_all()
        keys = self.keys()
        self.workspace.open()
        try:
            self._write_variables()
            self.workspace.report.unlink(missing_ok=True)
            with self.store.in_use():
                finished = self._run(compiled, keys)
        finally:
            self.workspace.close()
        if finished and self.options.checkpoints:
            removed = self.store.prune(self.recipe.name, set(keys))
            if removed:
                self.progress.say(f"removed {removed} checkpoint(s) this recipe no longer uses")

    def _write_variables(self) -> None:
        """$$build_dir/variables.yaml: every global as the scripts see it (for manifests)."""
        resolved = {str(k): str(v) for k, v in self.variables.all_resolved().items()}
        text = yaml.safe_dump(resolved, sort_keys=True,
                              default_flow_style=False)
        (self.workspace.dir / "variables.yaml").write_text(text)

    def _run(self, compiled: list[CompiledMacrostep], keys: list[str]) -> bool:
        """Run the macrosteps; True when the whole recipe ran (no stop asked for)."""
        ws = self.workspace
        state = ws.state()
        steps: dict[str, StepState] = {
            n: StepState.from_json(d) for n, d in state.get("steps", {}).items()}
        macros = self.recipe.macrosteps
        total = len(macros)
        start_index, start_micro = self._start(steps, keys)

        for i in range(start_index):
            m = macros[i]
            if self.options.start is None:
                self.progress.restored(i + 1, total, m.name)

        saving = self.options.checkpoints and self.options.start is None
        for i in range(start_index, total):
            macro = macros[i]
            first = start_micro if i == start_index else 0
            last = len(macro.microsteps)
            stop_here = False
            bp = self.options.breakpoint
            if bp and bp.macro == macro.name:
                last = macro.index_of(bp.micro) if bp.micro else first
                stop_here = True
            to = self.options.stop_after
            if to and to.macro == macro.name:
                last = macro.index_of(to.micro) + 1 if to.micro else last
                stop_here = True
            if stop_here and last <= first and bp and bp.macro == macro.name:
                self._stopped_before(bp, steps, i)
                return False
            partial = steps.get(macro.name) if first > 0 else None
            lowers = self._lowers(steps, i)
            if partial is None:
                layer = ws.layer_dir(i + 1, macro.name)
                if layer.exists():
                    shutil.rmtree(layer)
                layer.mkdir(parents=True)
                env_in = self._env_of(steps, i)
            else:
                layer = self._writable_layer(partial, i, macro)
                env_in = partial.env if partial.env.exists() else self._env_of(steps, i)
            env_out = ws.env / f"{i + 1:02d}-{macro.name}.env"
            code = compile_macrostep(macro, self.variables, first, last) \
                if (first, last) != (0, len(macro.microsteps)) else compiled[i]
            self.progress.macrostep(i + 1, total, macro.name)
            try:
                result = self._run_script(i, code, lowers, layer, env_in, env_out)
            except Interrupted:
                at = self._current_index - 1 if self._current_index else first
                steps[macro.name] = StepState(layer, env_out, None, at)
                state["steps"] = {n: s.to_json() for n, s in steps.items()}
                ws.save_state(state)
                raise
            while result.returncode != 0:
                resume_at = result.failed_micro - 1 if result.failed_micro else code.first
                steps[macro.name] = StepState(layer, env_out, None, resume_at)
                state["steps"] = {n: s.to_json() for n, s in steps.items()}
                ws.save_state(state)
                choice = self._on_failure(code, result, i, lowers, layer, env_out)
                if choice == "abort":
                    self.progress.finished("failed")
                    raise BuildFailed(self._failure_message(code, result), None)
                next_first = resume_at + (1 if choice == "continue" else 0)
                code = compile_macrostep(macro, self.variables, next_first, last)
                result = self._run_script(i, code, lowers, layer, env_out, env_out)
            done_fully = first == 0 and last == len(macro.microsteps) and partial is None
            if stop_here and last < len(macro.microsteps):
                steps[macro.name] = StepState(layer, env_out, None, last)
            elif saving and macro.checkpoint and done_fully:
                cp = self.store.save(keys[i], layer, env_out, macro.name, self.recipe.name)
                steps[macro.name] = StepState(cp.layer, cp.env, keys[i])
            else:
                saving = False
                steps[macro.name] = StepState(layer, env_out, keys[i] if done_fully else None)
            state["steps"] = {n: s.to_json() for n, s in steps.items()}
            state["recipe"] = str(self.recipe.path)
            ws.save_state(state)
            self.progress.finished("built")
            if stop_here:
                self._stopped(macro, last, steps, i)
                return False
        self.progress.summary()
        if ws.report.exists():
            for line in ws.report.read_text(errors="replace").splitlines():
                self.progress.say(line)
        return True

    def _start(self, steps: dict[str, StepState], keys: list[str]) -> tuple[int, int]:
        """Index of the first macrostep to run (and microstep within it)."""
        macros = self.recipe.macrosteps
        start = self.options.start
        if start is not None:
            index = next(i for i, m in enumerate(macros) if m.name == start.macro)
            for m in macros[:index]:
                st = steps.get(m.name)
                if st is None or st.next_micro is not None or not st.layer.exists():
                    raise RecipeError(
                        f"--from {start}: macrostep '{m.name}' has not completed in "
                        f"{self.workspace.dir} (use --workdir with the build that stopped)")
            micro = macros[index].index_of(start.micro) if start.micro else 0
            if micro and macros[index].name not in steps:
                raise RecipeError(f"--from {start}: '{start.macro}' never ran in "
                                  f"{self.workspace.dir}; start from the macrostep itself")
            return index, micro
        if not self.options.checkpoints:
            return 0, 0
        index = 0
        for i, m in enumerate(macros):
            cp = self.store.get(keys[i]) if m.checkpoint else None
            if cp is None:
                break
            steps[m.name] = StepState(cp.layer, cp.env, keys[i])
            index = i + 1
        bp = self.options.breakpoint
        if bp is not None:
            # Never restore past a breakpoint: the user wants to stop before it.
            index = min(index, next(i for i, m in enumerate(macros) if m.name == bp.macro))
        return index, 0

    def _lowers(self, steps: dict[str, StepState], index: int) -> tuple[Path, ...]:
        layers = [steps[m.name].layer for m in self.recipe.macrosteps[:index]]
        return (*reversed(layers), self.workspace.base)

    def _env_of(self, steps: dict[str, StepState], index: int) -> Path | None:
        if index == 0:
            return None
        return steps[self.recipe.macrosteps[index - 1].name].env

    def _writable_layer(self, st: StepState, index: int, macro: Macrostep) -> Path:
        """Resume a macrostep in its own layer; a checkpointed layer is copied, never changed."""
        layer = self.workspace.layer_dir(index + 1, macro.name)
        if st.layer != layer:
            if layer.exists():
                shutil.rmtree(layer)
            shutil.copytree(st.layer, layer, symlinks=True)
        return layer

    def _runtime(self, index: int, lowers, layer: Path, env_in: Path | None,
                 env_out: Path) -> Runtime:
        work = self.workspace.overlay_work / f"{index + 1:02d}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        fstab = self.workspace.scripts / "chroot.fstab"
        text = chroot_fstab(self.workspace.rootfs)
        if not fstab.exists() or fstab.read_text() != text:
            fstab.write_text(text)
        return Runtime(root=self.workspace.rootfs, cwd=self.options.cwd, env_in=env_in,
                       env_out=env_out, lowers=tuple(lowers), upper=layer, overlay_work=work,
                       chroot_fstab=fstab)

    def _script_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "TERM", "http_proxy", "https_proxy", "no_proxy")}
        path = env.get("PATH", "/usr/bin:/bin")
        for extra in ("/usr/local/sbin", "/usr/sbin", "/sbin"):
            if extra not in path.split(":"):
                path += ":" + extra
        env.update(PATH=path, HOME=os.environ.get("HOME", "/root"), LANG="C.UTF-8")
        return env

    def _run_script(self, index: int, code: CompiledMacrostep, lowers, layer: Path,
                    env_in: Path | None, env_out: Path) -> ScriptResult:
        runtime = self._runtime(index, lowers, layer, env_in, env_out)
        script = self.workspace.scripts / f"{index + 1:02d}-{code.macro.name}.sh"
        script.write_text(script_text(code, runtime))
        header = f"\n===== {code.macro.name} ({code.first + 1}..{code.last} of " \
                 f"{len(code.macro.microsteps)} microsteps) =====\n"
        with self.workspace.log.open("a") as log:
            log.write(header)
        self._current = None
        self._current_index = 0

        def begin(micro_index: int) -> str:
            """A microstep starts: show it; its header line goes to the log."""
            name = code.macro.microsteps[micro_index - 1].name
            self._current, self._current_index = name, micro_index
            self.progress.microstep(name)
            return f"----- {code.macro.name}/{name}\n"

        run = ScriptRun(script, self.workspace.log, self._script_env(),
                        on_output=self.progress.output, on_begin=begin)
        try:
            return run.wait()
        except KeyboardInterrupt:
            where = f"{code.macro.name}/{self._current}" if self._current else code.macro.name
            self.progress.finished("interrupted")
            raise Interrupted(
                f"interrupted during {where}; nothing is left mounted",
                hint=f"resume with: {self._resume_command(where)}") from None
        finally:
            keep_recipe_variables(env_out)

    # --- failures and stops ---------------------------------------------------------------

    def _resume_command(self, where: str) -> str:
        return f"{self.options.command_line} --workdir {self.workspace.dir} --from {where}"

    def _failure_message(self, code: CompiledMacrostep, result: ScriptResult) -> str:
        macro = code.macro
        status = result.command_status if result.command_status is not None \
            else result.returncode
        micro_index = result.failed_micro
        if micro_index is None and 1 <= result.returncode <= MAX_MICROSTEPS:
            micro_index = result.returncode   # the script's exit status encodes the microstep
        if not micro_index:
            lines = [f"{self.recipe.path.name}: {macro.name} failed before its first microstep "
                     f"(exit {status})"]
            where = macro.name
        else:
            micro = macro.microsteps[micro_index - 1]
            where = f"{macro.name}/{micro.name}"
            lines = [f"{self.recipe.path.name}: {where} failed (exit {status})"]
            site = code.site(micro_index, result.failed_cmd or 0)
            if site:
                lines.append(f"  command: {site.command.first_line}  "
                             f"({site.command.path}:{site.command.line})")
        if result.tail:
            lines.append("  last output:")
            lines.extend(f"    {ln}" for ln in result.tail[-15:])
        lines.append(f"  full log: {self.workspace.log}")
        lines.append(f"  work directory kept: {self.workspace.dir}")
        lines.append(f"  resume: {self._resume_command(where)}")
        return "\n".join(lines)

    def _on_failure(self, code: CompiledMacrostep, result: ScriptResult, index: int, lowers,
                    layer: Path, env: Path) -> str:
        if not self.options.interactive:
            return "abort"
        self.progress.pause()
        print(self._failure_message(code, result), file=sys.stderr)
        while True:
            answer = input("[r]etry, [s]hell in the appliance, [c]ontinue, [a]bort? ").strip()
            choice = {"r": "retry", "s": "shell", "c": "continue", "a": "abort"}.get(
                answer[:1].lower())
            if choice == "shell":
                self.shell(index, lowers, layer, env)
                continue
            if choice:
                if hasattr(self.progress, "resume") and choice != "abort":
                    self.progress.resume()
                return choice

    def shell(self, index: int, lowers, layer: Path, env: Path | None) -> int:
        """An interactive shell inside the appliance as the failed step left it."""
        runtime = self._runtime(index, lowers, layer, env, self.workspace.dir / "shell.env")
        script = self.workspace.scripts / "shell.sh"
        body = ('trap - EXIT INT TERM; __bi_mount_chroot\n'
                'echo "build-iso: shell in the appliance; exit to return"\n'
                'chroot "$__bi_root" /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin '
                'HOME=/root TERM="${TERM:-linux}" /bin/bash -i || true\n')
        head = script_text(compile_macrostep(self.recipe.macrosteps[index], self.variables, 0, 0),
                           runtime)
        script.write_text(head + body)
        return run_interactive(script, self._script_env())

    def _stopped_before(self, bp: StepRef, steps: dict[str, StepState], index: int) -> None:
        ws = self.workspace
        ws.save_state({"recipe": str(self.recipe.path),
                       "steps": {n: s.to_json() for n, s in steps.items()}})
        self.progress.say(f"breakpoint: stopped before {bp}")
        self.progress.say(f"resume with: {self._resume_command(str(bp))}")

    def _stopped(self, macro: Macrostep, last: int, steps, index: int) -> None:
        if last < len(macro.microsteps):
            nxt = f"{macro.name}/{macro.microsteps[last].name}"
            label = "breakpoint" if self.options.breakpoint else "stopped"
            self.progress.say(f"{label}: stopped before {nxt}")
            self.progress.say(f"resume with: {self._resume_command(nxt)}")
        elif index + 1 < len(self.recipe.macrosteps):
            nxt = self.recipe.macrosteps[index + 1].name
            self.progress.say(f"stopped after {macro.name}")
            self.progress.say(f"resume with: {self._resume_command(nxt)}")
        self.progress.summary()


def dry_run_text(engine: Engine) -> str:
    """The compiled scripts, as --dry-run prints them: shared helpers once, then each body."""
    parts = ["# build-iso --dry-run: each macrostep below runs as one bash script, in its own",
             "# mount and PID namespace, after these helpers and the appliance overlay mount.",
             PREAMBLE]
    for code in engine.compile_all():
        parts.append(code.body)
    return "\n".join(parts)


def list_text(recipe: Recipe) -> str:
    lines = []
    for i, m in enumerate(recipe.macrosteps, start=1):
        flag = "" if m.checkpoint else "  (no checkpoint)"
        lines.append(f"{i:2d}. {m.name}  [{m.path}]{flag}")
        for micro in m.microsteps:
            lines.append(f"      - {micro.name}")
    return "\n".join(lines)
