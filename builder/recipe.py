"""Load a recipe, its alias files and its macrostep files into a validated, immutable plan."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from builder.errors import RecipeError
from builder.yamlpos import PosDict, PosList, line_of, load_yaml

MANDATORY_GLOBALS = ("distrib", "arch", "output", "workdir_base")
SECTIONS = ("global", "choices", "aliases", "steps")
BUILTIN_VARIABLES = ("workdir", "build_dir", "recipe_dir", "recipe_name", "cwd", "python")
# A failing microstep is also encoded in the script's exit status (1..MAX_MICROSTEPS), so a
# macrostep cannot hold more microsteps than that; statuses above are left to bash and signals.
MAX_MICROSTEPS = 120
PROJECT_RECIPES = Path(__file__).resolve().parent.parent / "recipes"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_BASH_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# An alias's parameters in its commands: @1 .. @9 (`@@` is a literal `@`).
_PARAM = re.compile(r"@@|@([1-9])")


class CommandKind(StrEnum):
    CHECK_CMD = "check_cmd"
    CHECK_APPLIANCE_CMD = "check_appliance_cmd"
    EXEC_CURRENT = "exec_current"
    EXEC_APPLIANCE = "exec_appliance"
    EXEC_CHROOT = "exec_chroot"
    APPEND_FILE = "append_file"
    WRITE_FILE = "write_file"
    SET_VAR = "set_var"

    @property
    def takes_pair(self) -> bool:
        return self in (CommandKind.APPEND_FILE, CommandKind.WRITE_FILE, CommandKind.SET_VAR)


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    args: tuple[str, ...]  # one item, or two for append_file / write_file / set_var
    path: Path
    line: int

    @property
    def first_line(self) -> str:
        """What a user recognises in a failure report: the command and its first line."""
        if self.kind.takes_pair:
            return f"{self.kind}: {self.args[0]}"
        first = next((ln.strip() for ln in self.args[0].splitlines() if ln.strip()), "")
        return f"{self.kind}: {first}"


@dataclass(frozen=True)
class Condition:
    """`when:` of a macrostep file: each named variable has one of the listed words."""

    words: tuple[tuple[str, tuple[str, ...]], ...]   # (variable, accepted words)
    path: Path
    line: int

    def __str__(self) -> str:
        return ", ".join(f"{name} has {' or '.join(w or '(empty)' for w in words)}"
                         for name, words in self.words)


@dataclass(frozen=True)
class Alias:
    """A named list of commands with parameters @1..@N, used like a command."""

    name: str
    body: PosList                 # the commands as written, parameters unsubstituted
    params: int
    path: Path
    line: int


@dataclass(frozen=True)
class Microstep:
    name: str
    commands: tuple[Command, ...]
    path: Path
    line: int
    when: tuple[Condition, ...] = ()    # all must hold, else the microstep is skipped


@dataclass(frozen=True)
class Macrostep:
    name: str
    microsteps: tuple[Microstep, ...]
    path: Path          # the macrostep file
    line: int           # its entry in the recipe's steps list
    checkpoint: bool = True

    def index_of(self, micro: str) -> int:
        for i, m in enumerate(self.microsteps):
            if m.name == micro:
                return i
        raise KeyError(micro)


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    variables: dict[str, Any]          # global values as written (after --set), with positions
    variable_lines: dict[str, int]
    macrosteps: tuple[Macrostep, ...]
    search_path: tuple[Path, ...] = field(default=())

    @property
    def dir(self) -> Path:
        return self.path.parent

    def macrostep(self, name: str) -> Macrostep:
        for m in self.macrosteps:
            if m.name == name:
                return m
        raise KeyError(name)


def parse_assignment(text: str) -> tuple[str, str]:
    """`key=value` from --set; a bad shape is a one-line error."""
    key, sep, value = text.partition("=")
    if not sep or not _NAME.match(key):
        raise RecipeError(f"--set expects key=value, got '{text}'")
    return key, value


def load_recipe(path: Path, overrides: dict[str, str] | None = None) -> Recipe:
    path = path.resolve() if path.exists() else path
    if not path.is_file():
        raise RecipeError("recipe not found", path)
    doc = load_yaml(path)
    if not isinstance(doc, PosDict):
        raise RecipeError("a recipe is a mapping with 'global' and 'steps'", path, line_of(doc, 1))
    for key in doc:
        if key not in SECTIONS:
            raise RecipeError(f"unknown recipe section '{key}' (expected 'global', 'choices', "
                              "'aliases' and 'steps')", path, doc.key_lines[key])
    glob = doc.get("global")
    if not isinstance(glob, PosDict):
        raise RecipeError("missing or malformed 'global' mapping", path,
                          doc.key_lines.get("global", 1))
    variables: dict[str, Any] = dict(glob)
    lines = dict(glob.key_lines)
    for name in variables:
        if name in BUILTIN_VARIABLES:
            raise RecipeError(f"'{name}' is a built-in variable and cannot be set by a recipe",
                              path, lines[name])
        if not _NAME.match(name):
            raise RecipeError(f"invalid variable name '{name}'", path, lines[name])
    for key, value in (overrides or {}).items():
        if key not in variables:
            known = ", ".join(sorted(variables))
            raise RecipeError(f"--set {key}: the recipe has no variable '{key}' (it has: {known})",
                              path)
        variables[key] = _override_value(value)
    missing = [k for k in MANDATORY_GLOBALS if k not in variables]
    if missing:
        raise RecipeError(f"missing mandatory global variable(s): {', '.join(missing)}", path,
                          glob.line)
    for name, accepted in _choices(doc, variables, path).items():
        value = _scalar_text(variables[name]) if not isinstance(variables[name], list) else None
        if value not in accepted:
            raise RecipeError(_refusal(name, variables[name], accepted, path), path,
                              doc["choices"].key_lines[name])

    distrib = str(variables["distrib"])
    search = _search_path(path.parent, distrib)
    aliases = _load_aliases(doc, path, search)
    steps = doc.get("steps")
    if not isinstance(steps, PosList) or not steps:
        raise RecipeError("'steps' must be a non-empty list of macrosteps", path,
                          doc.key_lines.get("steps", 1))
    macrosteps: list[Macrostep] = []
    seen: set[str] = set()
    for entry in steps:
        macro = _load_macrostep_entry(entry, steps, path, search, aliases)
        if macro.name in seen:
            raise RecipeError(f"macrostep '{macro.name}' appears twice in steps", path, macro.line)
        seen.add(macro.name)
        macrosteps.append(macro)
    return Recipe(path=path, name=path.stem, variables=variables, variable_lines=lines,
                  macrosteps=tuple(macrosteps), search_path=search)


def _choices(doc: PosDict, variables: dict[str, Any], path: Path) -> dict[str, tuple[str, ...]]:
    """The recipe's `choices:` section: knob -> the values it may take."""
    section = doc.get("choices")
    if section is None:
        return {}
    if not isinstance(section, PosDict):
        raise RecipeError("'choices' must map variables to the lists of values they may take",
                          path, doc.key_lines["choices"])
    found: dict[str, tuple[str, ...]] = {}
    for name, values in section.items():
        line = section.key_lines[name]
        if name not in variables:
            raise RecipeError(f"choices: '{name}' is not a global variable of the recipe",
                              path, line)
        if not isinstance(values, list) or not values or any(
                isinstance(v, (dict, list)) or v is None for v in values):
            raise RecipeError(f"choices: '{name}' must list the values it may take", path, line)
        found[name] = tuple(_scalar_text(v) for v in values)
    return found


def _refusal(name: str, value: Any, accepted: tuple[str, ...], path: Path) -> str:
    """Why `name=value` is refused, and which recipe beside this one takes that value."""
    shown = ",".join(map(str, value)) if isinstance(value, list) else _scalar_text(value)
    message = (f"{name} '{shown}' is not supported by this recipe "
               f"(choices: {', '.join(accepted)})")
    for other in sorted(path.parent.glob("*.yaml")):
        if other == path or isinstance(value, list):
            continue
        try:
            choices = load_yaml(other).get("choices")
        except (RecipeError, AttributeError):
            continue
        if isinstance(choices, dict) and shown in map(_scalar_text, choices.get(name) or ()):
            return f"{message}; {other.name} beside it takes {name}={shown}"
    return message


def _override_value(value: str) -> Any:
    """`--set output=iso,tgz` gives a list; anything else stays a string."""
    if "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _search_path(recipe_dir: Path, distrib: str) -> tuple[Path, ...]:
    candidates = [recipe_dir, recipe_dir / "steps" / distrib, recipe_dir / "steps" / "common",
                  PROJECT_RECIPES / "steps" / distrib, PROJECT_RECIPES / "steps" / "common"]
    out: list[Path] = []
    for c in candidates:
        if c not in out:
            out.append(c)
    return tuple(out)


def _find_file(name: str, search: tuple[Path, ...], relative_to: Path | None = None) -> Path | None:
    names = [name] if name.endswith((".yaml", ".yml")) else [f"{name}.yaml", f"{name}.yml"]
    dirs = ([relative_to] if relative_to else []) + list(search)
    for d in dirs:
        for n in names:
            candidate = d / n
            if candidate.is_file():
                return candidate.resolve()
    return None


def _load_aliases(doc: PosDict, path: Path, search: tuple[Path, ...]) -> dict[str, Alias]:
    """The aliases of the files the recipe's `aliases` names (one name or a list)."""
    if "aliases" not in doc:
        return {}
    line = doc.key_lines["aliases"]
    names = doc["aliases"]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RecipeError("'aliases' is a file name or a list of file names", path, line)
    aliases: dict[str, Alias] = {}
    for name in names:
        file = _find_file(str(name), search)
        if file is None:
            where = ", ".join(str(d) for d in search)
            raise RecipeError(f"alias file '{name}' not found (searched: {where})", path,
                              line_of(name, line))
        for alias in _alias_file(file):
            if alias.name in aliases:
                first = aliases[alias.name]
                raise RecipeError(f"alias '{alias.name}' is already defined at "
                                  f"{first.path}:{first.line}", file, alias.line)
            aliases[alias.name] = alias
    return aliases


def _alias_file(file: Path) -> list[Alias]:
    doc = load_yaml(file)
    if not isinstance(doc, PosDict):
        raise RecipeError("an alias file is a mapping: alias name -> list of commands", file,
                          line_of(doc, 1))
    out = []
    for name, body in doc.items():
        line = doc.key_lines[name]
        if not _NAME.match(name):
            raise RecipeError(f"invalid alias name '{name}'", file, line)
        if name in {k.value for k in CommandKind} or name in ("include", "when"):
            raise RecipeError(f"alias '{name}' would hide the built-in '{name}'", file, line)
        if not isinstance(body, PosList) or not body:
            raise RecipeError(f"alias '{name}' must be a non-empty list of commands", file, line)
        # The commands must be built-in ones of the right shape, parameters as they stand.
        _load_commands(body, file, line, {})
        params = max((int(m.group(1)) for m in _PARAM.finditer(_all_text(body)) if m.group(1)),
                     default=0)
        out.append(Alias(name=name, body=body, params=params, path=file, line=line))
    return out


def _all_text(value: Any) -> str:
    if isinstance(value, PosDict):
        return "\n".join(_all_text(v) for v in value.values())
    if isinstance(value, PosList):
        return "\n".join(_all_text(v) for v in value)
    return "" if value is None else _scalar_text(value)


def _expand_alias(alias: Alias, arg: Any, file: Path, line: int) -> tuple[Command, ...]:
    """The alias's commands with its parameters replaced, placed at the line that uses it."""
    if alias.params == 0:
        args: list[Any] = [] if arg is None else [arg]
    elif alias.params == 1 and not isinstance(arg, PosList):
        args = [] if arg is None else [arg]
    else:
        args = list(arg) if isinstance(arg, PosList) else ([] if arg is None else [arg])
    if len(args) != alias.params or any(isinstance(a, (PosDict, PosList)) for a in args):
        shape = ("nothing" if alias.params == 0 else "one text" if alias.params == 1
                 else f"a list of {alias.params} texts")
        raise RecipeError(f"alias '{alias.name}' ({alias.path.name}:{alias.line}) takes "
                          f"{shape}, got {len(args)} item(s)", file, line)
    texts = ["" if a is None else _scalar_text(a) for a in args]

    def substitute(value: Any) -> Any:
        if isinstance(value, PosDict):
            out = PosDict((k, substitute(v)) for k, v in value.items())
            out.line, out.path, out.key_lines = value.line, value.path, value.key_lines
            return out
        if isinstance(value, PosList):
            out_list = PosList(substitute(v) for v in value)
            out_list.line, out_list.path = value.line, value.path
            return out_list
        if isinstance(value, str):
            return _PARAM.sub(lambda m: texts[int(m.group(1)) - 1] if m.group(1) else "@",
                              value)
        return value

    try:
        commands = _load_commands(substitute(alias.body), alias.path, alias.line, {})
    except RecipeError as exc:
        raise RecipeError(f"alias '{alias.name}': {exc.message}", file, line) from None
    return tuple(Command(kind=c.kind, args=c.args, path=file, line=line) for c in commands)


def _load_macrostep_entry(entry: Any, steps: PosList, path: Path, search: tuple[Path, ...],
                          aliases: dict[str, Alias]) -> Macrostep:
    line = line_of(entry, steps.line)
    selection: list[str] | None = None
    checkpoint = True
    if isinstance(entry, str):
        name = str(entry)
    elif isinstance(entry, PosDict) and len(entry) == 1:
        name, options = next(iter(entry.items()))
        line = entry.key_lines[name]
        if isinstance(options, PosList):
            selection = _names(options, path, "microstep")
        elif isinstance(options, PosDict):
            for key in options:
                if key not in ("microsteps", "checkpoint"):
                    raise RecipeError(f"unknown option '{key}' for macrostep '{name}' "
                                      "(expected microsteps, checkpoint)", path,
                                      options.key_lines[key])
            if "microsteps" in options:
                if not isinstance(options["microsteps"], PosList):
                    raise RecipeError(f"'microsteps' of '{name}' must be a list", path,
                                      options.key_lines["microsteps"])
                selection = _names(options["microsteps"], path, "microstep")
            if "checkpoint" in options:
                if not isinstance(options["checkpoint"], bool):
                    raise RecipeError(f"'checkpoint' of '{name}' must be true or false", path,
                                      options.key_lines["checkpoint"])
                checkpoint = options["checkpoint"]
        elif options is not None:
            raise RecipeError(f"macrostep '{name}' must map to a list of microsteps or options",
                              path, line)
    else:
        raise RecipeError("a steps entry is a macrostep name or a one-key mapping", path, line)
    if not _NAME.match(name):
        raise RecipeError(f"invalid macrostep name '{name}'", path, line)
    file = _find_file(name, search)
    if file is None:
        where = ", ".join(str(d) for d in search)
        raise RecipeError(f"macrostep file '{name}.yaml' not found (searched: {where})", path, line)
    microsteps = _load_microsteps(file, search, aliases, stack=())
    by_name = {m.name: m for m in microsteps}
    if selection is not None:
        chosen = []
        for item in selection:
            if item not in by_name:
                raise RecipeError(f"macrostep '{name}' has no microstep '{item}' "
                                  f"(it has: {', '.join(by_name)})", path, line_of(item, line))
            chosen.append(by_name[item])
        microsteps = chosen
    if len(microsteps) > MAX_MICROSTEPS:
        raise RecipeError(f"macrostep '{name}' has {len(microsteps)} microsteps; at most "
                          f"{MAX_MICROSTEPS} fit the failure status encoding: split it", path, line)
    return Macrostep(name=name, microsteps=tuple(microsteps), path=file, line=line,
                     checkpoint=checkpoint)


def _names(items: PosList, path: Path, what: str) -> list[str]:
    for item in items:
        if not isinstance(item, str):
            raise RecipeError(f"a {what} name must be a string, got {item!r}", path,
                              line_of(item, items.line))
    return list(items)


def _load_microsteps(file: Path, search: tuple[Path, ...], aliases: dict[str, Alias],
                     stack: tuple[Path, ...]) -> list[Microstep]:
    if file in stack:
        chain = " -> ".join(p.name for p in (*stack, file))
        raise RecipeError(f"include cycle: {chain}", stack[-1])
    doc = load_yaml(file)
    if doc is None:
        return []
    if not isinstance(doc, PosList):
        raise RecipeError("a macrostep file is a list of microsteps", file, line_of(doc, 1))
    out: list[Microstep] = []
    names: set[str] = set()
    when: tuple[Condition, ...] = ()
    for position, item in enumerate(doc):
        if not isinstance(item, PosDict) or len(item) != 1:
            raise RecipeError("a microstep is a one-key mapping: name -> list of commands", file,
                              line_of(item, doc.line))
        name, body = next(iter(item.items()))
        line = item.key_lines[name]
        if name == "when":
            if position != 0:
                raise RecipeError("'when' must be the first entry of a macrostep file (it "
                                  "applies to all its microsteps)", file, line)
            when = (_condition(body, file, line),)
            continue
        if name == "include":
            if not isinstance(body, str):
                raise RecipeError("include takes a file name", file, line)
            target = _find_file(str(body), search, relative_to=file.parent)
            if target is None:
                raise RecipeError(f"included file '{body}' not found", file, line)
            included = _load_microsteps(target, search, aliases, (*stack, file))
        else:
            if not _NAME.match(name):
                raise RecipeError(f"invalid microstep name '{name}'", file, line)
            included = [Microstep(name=name, commands=_load_commands(body, file, line, aliases),
                                  path=file, line=line)]
        for micro in included:
            if when:
                micro = replace(micro, when=when + micro.when)
            if micro.name in names:
                raise RecipeError(f"microstep '{micro.name}' is defined twice", file, micro.line)
            names.add(micro.name)
            out.append(micro)
    return out


def _condition(body: Any, file: Path, line: int) -> Condition:
    """`when: {output: iso}` or `when: {output: [qcow2, raw]}`: words a variable must have."""
    if not isinstance(body, PosDict) or not body:
        raise RecipeError("'when' takes a mapping of variable -> word or list of words, "
                          "e.g. {output: iso}", file, line)
    words = []
    for name, value in body.items():
        key_line = body.key_lines[name]
        if not _NAME.match(name):
            raise RecipeError(f"when: invalid variable name '{name}'", file, key_line)
        items = list(value) if isinstance(value, PosList) else [value]
        # "" stands for an empty variable: `when: {secrets: ""}` runs only without one.
        if not items or not all(isinstance(v, str) and (v == "" or v.strip() and " " not in v)
                                for v in items):
            raise RecipeError(f"when: '{name}' takes a word or a list of words", file, key_line)
        words.append((str(name), tuple(str(v) for v in items)))
    return Condition(words=tuple(words), path=file, line=line)


def _load_commands(body: Any, file: Path, line: int,
                   aliases: dict[str, Alias]) -> tuple[Command, ...]:
    if body is None:
        return ()
    if not isinstance(body, PosList):
        raise RecipeError("a microstep is a list of commands", file, line)
    commands = []
    for item in body:
        item_line = line_of(item, line)
        if not isinstance(item, PosDict) or len(item) != 1:
            raise RecipeError("a command is a one-key mapping such as 'exec_chroot: ...'", file,
                              item_line)
        key, arg = next(iter(item.items()))
        item_line = item.key_lines[key]
        if key in aliases:
            commands.extend(_expand_alias(aliases[key], arg, file, item_line))
            continue
        try:
            kind = CommandKind(key)
        except ValueError:
            known = ", ".join([*(k.value for k in CommandKind), *aliases])
            raise RecipeError(f"unknown command '{key}' (known: {known})", file,
                              item_line) from None
        commands.append(Command(kind=kind, args=_command_args(kind, arg, file, item_line),
                                path=file, line=item_line))
    return tuple(commands)


def _command_args(kind: CommandKind, arg: Any, file: Path, line: int) -> tuple[str, ...]:
    if kind.takes_pair:
        if not isinstance(arg, PosList) or len(arg) != 2:
            raise RecipeError(f"{kind} takes a list of two items [{_pair_names(kind)}]", file, line)
        first, second = arg
        if not isinstance(first, str) or not first.strip():
            raise RecipeError(f"{kind}: the first item must be a non-empty string", file, line)
        if isinstance(second, (PosDict, PosList)):
            raise RecipeError(f"{kind}: the second item must be text", file, line)
        second = "" if second is None else _scalar_text(second)
        if kind is CommandKind.SET_VAR and not _BASH_NAME.match(first):
            raise RecipeError(f"set_var: '{first}' is not a valid variable name", file, line)
        if kind is not CommandKind.SET_VAR and ".." in Path(first).parts:
            raise RecipeError(f"{kind}: path '{first}' leaves the appliance", file, line)
        return (str(first), second)
    if isinstance(arg, (PosDict, PosList)) or arg is None:
        raise RecipeError(f"{kind} takes one text argument", file, line)
    text = _scalar_text(arg)
    if kind in (CommandKind.CHECK_CMD, CommandKind.CHECK_APPLIANCE_CMD) and not re.match(
            r"^[A-Za-z0-9_.+$@{}/-]+$", text):
        raise RecipeError(f"{kind} takes a command name, got '{text}'", file, line)
    return (text,)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pair_names(kind: CommandKind) -> str:
    return "name, value" if kind is CommandKind.SET_VAR else "path, content"
