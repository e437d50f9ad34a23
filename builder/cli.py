"""`build-iso RECIPE.yaml`: build an image from a recipe of macrosteps and microsteps."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path

from builder.engine import BuildOptions, Engine, dry_run_text, list_text, parse_step_ref
from builder.errors import EXIT_BAD_INPUT, BuilderError, Interrupted, RecipeError, report
from builder.progress import make_progress
from builder.recipe import load_recipe, parse_assignment


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build-iso",
        description="Build an image (ISO, tgz, qcow2, PXE bundle) from a YAML recipe.")
    p.add_argument("recipe", type=Path, help="the recipe file (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a global variable of the recipe (repeatable; a,b gives a list)")
    p.add_argument("--workdir", type=Path, help="work directory to use (default: "
                   "WORKDIR_BASE/RECIPE_NAME)")
    p.add_argument("--from", dest="start", metavar="MACRO[/MICRO]",
                   help="resume in an existing --workdir from this step")
    p.add_argument("--to", dest="stop_after", metavar="MACRO[/MICRO]",
                   help="stop after this step")
    p.add_argument("--breakpoint", metavar="MACRO[/MICRO]", help="stop before this step")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="neither restore nor save checkpoints: build everything")
    p.add_argument("--clear-checkpoints", action="store_true",
                   help="delete the saved checkpoints of WORKDIR_BASE and exit")
    p.add_argument("--dry-run", action="store_true", help="print the compiled scripts and exit")
    p.add_argument("--list", action="store_true",
                   help="print the macrosteps and microsteps in order and exit")
    p.add_argument("--non-interactive", action="store_true",
                   help="on failure, abort instead of offering retry/shell/continue")
    p.add_argument("-v", "--verbose", action="store_true", help="show the scripts' output")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    return p


def _terminate(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    progress = None
    try:
        overrides = dict(parse_assignment(a) for a in args.overrides)
        recipe = load_recipe(args.recipe, overrides)
        refs = {}
        for option, value in (("--from", args.start), ("--to", args.stop_after),
                              ("--breakpoint", args.breakpoint)):
            refs[option] = parse_step_ref(value, recipe, option) if value else None
        if args.start and not args.workdir:
            raise RecipeError("--from needs --workdir (the work directory of the stopped build)")
        interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.non_interactive \
            and not os.environ.get("CI")
        options = BuildOptions(
            workdir=args.workdir.resolve() if args.workdir else None,
            start=refs["--from"], stop_after=refs["--to"], breakpoint=refs["--breakpoint"],
            checkpoints=not args.no_checkpoint, interactive=interactive,
            command_line="build-iso " + " ".join(
                shlex.quote(a) for a in [str(args.recipe)] + [f"--set={o}" for o in
                                                              args.overrides]))
        if args.list:
            print(list_text(recipe))
            return 0
        if os.geteuid() != 0 and not args.dry_run:
            raise RecipeError("build-iso needs root (it mounts and chroots into the appliance)")
        progress = make_progress(verbose=args.verbose)
        engine = Engine(recipe, options, progress)
        if args.dry_run:
            progress.close()
            print(dry_run_text(engine))
            return 0
        if args.clear_checkpoints:
            count = engine.store.clear()
            progress.say(f"removed {count} checkpoint(s) from {engine.store.directory}")
            return 0
        engine.run()
        return 0
    except KeyboardInterrupt:
        error: BuilderError = Interrupted("interrupted; nothing is left mounted")
    except BuilderError as exc:
        error = exc
    except Exception:
        if progress:
            progress.close()
        if args.debug:
            raise
        traceback.print_exc(limit=1)
        print("build-iso: internal error (run with --debug for the full traceback)",
              file=sys.stderr)
        return 3
    finally:
        if progress:
            progress.close()
    if args.debug:
        traceback.print_exc()
    report(error)
    return error.exit_status if error.exit_status else EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
