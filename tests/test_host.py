"""The host package lists (recipes/, tests/, bench/ host.txt): what make installs, what the build
checks and uses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.recipe import CommandKind, load_recipe

ROOT = Path(__file__).resolve().parent.parent
LISTS = ("build", "test", "bench")  # each set-up installs its list and the ones before it
LIST_FILES = {"build": "recipes/host.txt", "test": "tests/host.txt", "bench": "bench/host.txt"}
RECIPE = ROOT / "recipes" / "debian-bookworm-x86_64-oar-2.5-iso.yaml"
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")
PROGRAM = re.compile(r"^[A-Za-z0-9][\w.+-]*$")
HOST_SIDE = (CommandKind.EXEC_CURRENT, CommandKind.EXEC_APPLIANCE, CommandKind.CHECK_CMD)


def read_list(name: str) -> dict[str, tuple[str, ...]]:
    """package -> what is used from it, from the set-up's list (LIST_FILES)."""
    packages: dict[str, tuple[str, ...]] = {}
    for line in (ROOT / LIST_FILES[name]).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            package, *items = line.split()
            packages[package] = tuple(items)
    return packages


def installed_by(name: str) -> list[str]:
    """The packages `make host-NAME-deps` installs: its list and the ones before it."""
    return [p for earlier in LISTS[: LISTS.index(name) + 1] for p in read_list(earlier)]


def host_side_scripts() -> list[tuple[str, str]]:
    """(macrostep/microstep, text) of every command the recipe runs on the build host."""
    recipe = load_recipe(RECIPE)
    return [(f"{macro.name}/{micro.name}", command.args[0])
            for macro in recipe.macrosteps for micro in macro.microsteps
            for command in micro.commands if command.kind in HOST_SIDE]


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def owners(paths: set[str]) -> dict[str, str]:
    """path -> the installed package that holds it, in one dpkg query (dpkg knows a /usr-merged
    file by either name, /usr/bin/ip as /bin/ip)."""
    asked = {candidate: path for path in paths
             for candidate in (path.removeprefix("/usr"), path)}
    listing = run(["dpkg-query", "-S", *asked]).stdout
    found: dict[str, str] = {}
    for line in listing.splitlines():
        packages, _, held = line.partition(": ")
        if held in asked:
            found[asked[held]] = packages.split(",")[0].strip()
    return found


def not_installed(packages: list[str]) -> list[str]:
    shown = run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages]).stdout
    installed = {line.split()[0] for line in shown.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def depends(packages: set[str], levels: int = 3) -> dict[str, set[str]]:
    """package -> itself and what it depends on, `levels` deep (a metapackage holds no file)."""
    closure = {p: {p} for p in packages}
    frontier = {p: {p} for p in packages}
    for _ in range(levels):
        names = set().union(*frontier.values())
        if not names:
            break
        shown = run(["dpkg-query", "-W", "-f=${Package}\t${Depends},${Pre-Depends}\n", *names])
        direct: dict[str, set[str]] = {}
        for line in shown.stdout.splitlines():
            name, _, field = line.partition("\t")
            direct[name] = {alt.strip().split(" ")[0].split(":")[0]
                            for alt in re.split(r"[,|]", field) if alt.strip()}
        for package in packages:
            reached = set().union(*(direct.get(n, set()) for n in frontier[package]))
            frontier[package] = reached - closure[package]
            closure[package] |= reached
    return closure


def on_every_debian(packages: set[str]) -> set[str]:
    """Those of `packages` that are essential or required: on any Debian system, never listed."""
    shown = run(["dpkg-query", "-W", "-f=${Package} ${Essential} ${Priority}\n", *packages])
    return {line.split()[0] for line in shown.stdout.splitlines()
            if {"yes", "required"} & set(line.split()[1:])}


# ---- the lists themselves --------------------------------------------------------------------


@pytest.mark.parametrize("name", LISTS)
def test_each_line_is_a_package_then_programs_or_absolute_paths(name):
    packages = read_list(name)
    assert packages, f"host/{name}.txt lists no package"
    for package, items in packages.items():
        assert PACKAGE.match(package), f"host/{name}.txt: {package!r} is not a package name"
        assert items, f"host/{name}.txt: {package} says nothing of what is used from it"
        for item in items:
            assert item.startswith("/") or PROGRAM.match(item), f"{name}: {item!r}"


def test_no_package_is_in_two_lists():
    every = [p for name in LISTS for p in read_list(name)]
    assert len(every) == len(set(every))


@pytest.mark.spawns
@pytest.mark.parametrize("name", LISTS)
def test_make_installs_exactly_the_list(name):
    variable = f"{name.upper()}_DEBS"
    shown = run(["make", "-s", "--no-print-directory", "-C", str(ROOT),
                 "--eval", f"show-debs: ; @echo $({variable})", "show-debs"])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == installed_by(name)


# ---- the build's host check ------------------------------------------------------------------


def check_host_tools() -> str:
    bootstrap = load_recipe(RECIPE).macrostep("bootstrap")
    micro = bootstrap.microsteps[bootstrap.index_of("check_host_tools")]
    (command,) = micro.commands
    assert command.kind is CommandKind.EXEC_CURRENT
    return command.args[0]


def test_the_build_checks_the_list_make_iso_installs():
    script = check_host_tools()
    assert '"$$project_dir/recipes/host.txt"' in script
    project_dir = load_recipe(RECIPE).variables["project_dir"]
    assert Path(project_dir.replace("$$recipe_dir", str(RECIPE.parent))).resolve() == ROOT


@pytest.mark.spawns
def test_a_missing_piece_is_named_with_the_command_that_installs_it(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "host.txt").write_text(
        "# comment\n\nutil-linux  unshare\n"
        "oar-live-nothing  /nonexistent/oar-live.bin oar-live-no-such-program\n")
    script = check_host_tools().replace("$$project_dir", str(tmp_path))
    result = run(["bash", "-euo", "pipefail", "-c", script])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "missing /nonexistent/oar-live.bin on the host (Debian package oar-live-nothing)",
        "missing oar-live-no-such-program on the host (Debian package oar-live-nothing)",
        "install them as root: apt-get install --no-install-recommends oar-live-nothing "
        "(or: make host-build-deps)",
    ]


@pytest.mark.spawns
def test_the_build_check_passes_on_this_host():
    script = check_host_tools().replace("$$project_dir", str(ROOT))
    result = run(["bash", "-euo", "pipefail", "-c", script])
    assert result.returncode == 0, result.stderr


# ---- dpkg: each item is where the list says ----------------------------------------------------


@pytest.mark.spawns
@pytest.mark.parametrize("name", LISTS)
def test_what_is_used_belongs_to_the_listed_package(name):
    packages = read_list(name)
    missing = not_installed(list(packages))
    if missing:
        pytest.skip(f"not installed here: {' '.join(missing)} (make host-{name}-deps)")
    holders = depends(set(packages))
    paths = {item: item if item.startswith("/") else shutil.which(item)
             for items in packages.values() for item in items}
    absent = sorted(item for item, path in paths.items() if not path or not Path(path).exists())
    assert absent == [], f"not on this host although their packages are: {absent}"
    found = owners(set(paths.values()))
    wrong = {item: found.get(paths[item]) for package, items in packages.items()
             for item in items if found.get(paths[item]) not in holders[package]}
    assert wrong == {}, f"these belong to other packages than host/{name}.txt says"


# ---- the recipe: everything it takes from the host is listed ---------------------------------

# A word where a shell command starts (line start, after | ; & ( ` then do else ! xargs), with
# any VAR=value assignments before it.
_COMMAND_WORD = re.compile(
    r"(?:^|[|;&(`]|\bthen\b|\bdo\b|\belse\b|\bxargs\b|\bcommand -v\b|\bexec\b|!)[ \t]*"
    r"(?:[A-Za-z_]\w*=\S*[ \t]+)*([A-Za-z][\w.+-]*)(?=\s|$|[;|&)])", re.M)
# A literal host file: not a directory or glob, not a dpkg path filter of the image.
_HOST_FILE = re.compile(r"(?<![=\w$])(/usr/(?:lib|share)/[\w./+-]*[\w+-])(?![\w/*$.+-])")


def _code(script: str) -> str:
    """The shell code of `script`: without comments, double-quoted text (messages, commands
    passed to chroot) or case patterns."""
    code = re.sub(r'"(?:\\.|[^"\\])*"', '""', script)
    code = re.sub(r"(?m)^\s*#.*$|\s#\s.*$", "", code)
    return re.sub(r"(?m)^\s*[\w|*.-]+\)", "", code)


@pytest.mark.spawns
def test_every_program_the_build_runs_on_the_host_is_in_the_build_list():
    listed = set().union(*depends(set(read_list("build")), levels=1).values())
    runs: dict[str, str] = {}  # path -> where the recipe runs it
    for where, script in host_side_scripts():
        for word in _COMMAND_WORD.findall(_code(script)):
            path = shutil.which(word)  # None: a shell builtin, a function, or not on this host
            if path is not None:
                runs.setdefault(path, where)
    assert len(runs) > 20, "the scan finds the programs of the recipe"
    found = owners(set(runs))
    everywhere = on_every_debian(set(found.values()))
    unlisted = {path: f"{where}, package {found.get(path)}" for path, where in runs.items()
                if found.get(path) not in listed and found.get(path) not in everywhere}
    assert unlisted == {}, "add these to recipes/host.txt"


def test_every_host_file_the_build_reads_is_in_the_build_list():
    listed = {item for items in read_list("build").values() for item in items}
    used = {path: where for where, script in host_side_scripts()
            for path in _HOST_FILE.findall(script) if not path.startswith("/usr/lib/oar-live")}
    assert used, "the scan finds the boot loaders the build copies"
    assert {p: w for p, w in used.items() if p not in listed} == {}, "add them to recipes/host.txt"
