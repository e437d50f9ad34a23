"""Loading recipes: the format, the search path, and one-line errors naming file and line."""

from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.recipe import MAX_MICROSTEPS, CommandKind, load_recipe, parse_assignment


def _error(path: Path, **kw) -> RecipeError:
    with pytest.raises(RecipeError) as exc:
        load_recipe(path, **kw)
    return exc.value


def test_steps_files_and_selection(tree):
    tree.write("one.yaml", """
        - a:
            - exec_current: echo a
        - b:
            - write_file: [/etc/x, "content"]
            - set_var: [NAME, value]
        - c:
            - check_cmd: bash
        """)
    path = tree.recipe("""
        - one: [c, a]
        """)
    recipe = load_recipe(path)
    (macro,) = recipe.macrosteps
    assert [m.name for m in macro.microsteps] == ["c", "a"]
    assert macro.microsteps[0].commands[0].kind is CommandKind.CHECK_CMD


def test_search_path_order_recipe_dir_then_distrib_then_common(tree):
    tree.write("steps/common/shared.yaml", "- from_common:\n    - exec_current: 'true'\n")
    tree.write("steps/test/shared.yaml", "- from_distrib:\n    - exec_current: 'true'\n")
    tree.write("steps/common/only_common.yaml", "- c:\n    - exec_current: 'true'\n")
    recipe = load_recipe(tree.recipe("- shared\n- only_common\n"))
    assert recipe.macrosteps[0].microsteps[0].name == "from_distrib"
    assert recipe.macrosteps[1].microsteps[0].name == "c"
    tree.write("shared.yaml", "- from_recipe_dir:\n    - exec_current: 'true'\n")
    recipe = load_recipe(tree.recipes / "r.yaml")
    assert recipe.macrosteps[0].microsteps[0].name == "from_recipe_dir"


def test_include_inserts_microsteps_in_place(tree):
    tree.write("steps/common/keys.yaml", "- k1:\n    - exec_current: 'true'\n"
                                         "- k2:\n    - exec_current: 'true'\n")
    tree.write("main.yaml", """
        - first:
            - exec_current: 'true'
        - include: keys
        - last:
            - exec_current: 'true'
        """)
    recipe = load_recipe(tree.recipe("- main\n"))
    assert [m.name for m in recipe.macrosteps[0].microsteps] == ["first", "k1", "k2", "last"]


def test_mapping_form_with_checkpoint_option(tree):
    tree.write("exp.yaml", "- a:\n    - exec_current: 'true'\n- b:\n    - exec_current: 'true'\n")
    recipe = load_recipe(tree.recipe("- exp: {microsteps: [b], checkpoint: false}\n"))
    macro = recipe.macrosteps[0]
    assert not macro.checkpoint
    assert [m.name for m in macro.microsteps] == ["b"]


def test_set_overrides_a_global_and_lists(tree):
    tree.write("s.yaml", "- a:\n    - exec_current: 'true'\n")
    path = tree.recipe("- s\n")
    recipe = load_recipe(path, {"output": "iso,tgz"})
    assert recipe.variables["output"] == ["iso", "tgz"]
    err = _error(path, overrides={"nope": "1"})
    assert "no variable 'nope'" in err.message


@pytest.mark.parametrize("text", ["novalue", "=x", "a b=1"])
def test_bad_set_assignment(text):
    with pytest.raises(RecipeError, match="--set expects key=value"):
        parse_assignment(text)


# --- malformed input: each is one line naming the file and the line ---------------------


def test_bad_yaml(tree):
    tree.write("s.yaml", "- a:\n    - exec_current: 'true'\n  bad: [\n")
    err = _error(tree.recipe("- s\n"))
    assert "invalid YAML" in err.message and err.path.name == "s.yaml" and err.line


def test_unknown_command(tree):
    tree.write("s.yaml", "- a:\n    - exec_current: 'true'\n    - exec_sideways: ls\n")
    err = _error(tree.recipe("- s\n"))
    assert "unknown command 'exec_sideways'" in err.message
    assert err.path.name == "s.yaml" and err.line == 3


def test_missing_macrostep_file(tree):
    path = tree.recipe("- nothing_here\n")
    err = _error(path)
    assert "macrostep file 'nothing_here.yaml' not found" in err.message
    assert err.path == path and err.line == 7


def test_missing_microstep(tree):
    tree.write("s.yaml", "- a:\n    - exec_current: 'true'\n")
    path = tree.recipe("- s: [a, zzz]\n")
    err = _error(path)
    assert "has no microstep 'zzz'" in err.message and err.line == 7


def test_include_cycle(tree):
    tree.write("x.yaml", "- include: y.yaml\n")
    tree.write("y.yaml", "- include: x.yaml\n")
    err = _error(tree.recipe("- x\n"))
    assert "include cycle: x.yaml -> y.yaml -> x.yaml" in err.message


@pytest.mark.parametrize("command,expected", [
    ("write_file: /etc/x", "write_file takes a list of two items"),
    ("write_file: [/etc/x]", "write_file takes a list of two items"),
    ("append_file: [/etc/x, a, b]", "append_file takes a list of two items"),
    ("set_var: [1bad, x]", "not a valid variable name"),
    ("write_file: [../../etc/x, a]", "leaves the appliance"),
    ("exec_chroot: [a, b]", "exec_chroot takes one text argument"),
    ("check_cmd: 'rm -rf /'", "check_cmd takes a command name"),
])
def test_wrong_argument_shape(tree, command, expected):
    tree.write("s.yaml", f"- a:\n    - exec_current: 'true'\n    - {command}\n")
    err = _error(tree.recipe("- s\n"))
    assert expected in err.message and err.line == 3 and err.path.name == "s.yaml"


def test_missing_mandatory_globals(tree):
    path = tree.recipes / "r.yaml"
    path.write_text("global:\n  distrib: test\nsteps:\n  - s\n")
    err = _error(path)
    assert "missing mandatory global variable(s): arch, output, workdir_base" in err.message


def test_unknown_section_and_duplicate_step(tree):
    tree.write("s.yaml", "- a:\n    - exec_current: 'true'\n")
    path = tree.recipe("- s\n- s\n")
    assert "appears twice" in _error(path).message
    path.write_text(path.read_text() + "export:\n  - x\n")
    assert "unknown recipe section 'export'" in _error(path).message


def test_builtin_variables_cannot_be_set(tree):
    tree.write("s.yaml", "- a:\n    - exec_current: 'true'\n")
    err = _error(tree.recipe("- s\n", extra_globals="workdir: /tmp/x\n"))
    assert "'workdir' is a built-in variable" in err.message


def test_too_many_microsteps_for_the_status_encoding(tree):
    body = "".join(f"- m{i}:\n    - exec_current: 'true'\n" for i in range(MAX_MICROSTEPS + 1))
    tree.write("big.yaml", body)
    err = _error(tree.recipe("- big\n"))
    assert f"at most {MAX_MICROSTEPS}" in err.message


# --- aliases: commands with parameters, said once -----------------------------------------

ALIASES = """
    greet:
      - exec_current: echo "hello @1"
    copy:
      - exec_appliance: cp "@1" "@2"
      - write_file: [/etc/copied, "@2 from @1, 100@@1 literal"]
    stamp:
      - exec_current: date
    """


def test_alias_expands_in_place_with_its_parameters(tree):
    tree.write("steps/common/aliases.yaml", ALIASES)
    tree.write("s.yaml", """
        - a:
            - exec_current: 'true'
            - greet: world
            - copy: [/src, $$dst]
            - stamp:
        """)
    path = tree.recipe("- s\n")
    path.write_text("aliases: aliases\n" + path.read_text())
    (micro,) = load_recipe(path).macrosteps[0].microsteps
    assert [(c.kind, c.args) for c in micro.commands] == [
        (CommandKind.EXEC_CURRENT, ("true",)),
        (CommandKind.EXEC_CURRENT, ('echo "hello world"',)),
        (CommandKind.EXEC_APPLIANCE, ('cp "/src" "$$dst"',)),
        (CommandKind.WRITE_FILE, ("/etc/copied", "$$dst from /src, 100@1 literal")),
        (CommandKind.EXEC_CURRENT, ("date",)),
    ]
    # Failures point at the line that used the alias.
    assert [c.line for c in micro.commands] == [2, 3, 4, 4, 5]
    assert all(c.path.name == "s.yaml" for c in micro.commands)


def _alias_recipe(tree, use: str, aliases: str = ALIASES) -> Path:
    tree.write("steps/common/aliases.yaml", aliases)
    tree.write("s.yaml", f"- a:\n    - exec_current: 'true'\n    - {use}\n")
    path = tree.recipe("- s\n")
    path.write_text("aliases: aliases\n" + path.read_text())
    return path


@pytest.mark.parametrize("use,expected", [
    ("greet: [a, b]", "alias 'greet' (aliases.yaml:1) takes one text, got 2 item(s)"),
    ("greet:", "takes one text, got 0 item(s)"),
    ("copy: /only-one", "takes a list of 2 texts, got 1 item(s)"),
    ("copy: [a, {b: c}]", "takes a list of 2 texts"),
    ("stamp: now", "takes nothing, got 1 item(s)"),
    ("unknown_alias: x", "unknown command 'unknown_alias' (known: check_cmd"),
])
def test_malformed_alias_use_names_the_using_line(tree, use, expected):
    err = _error(_alias_recipe(tree, use))
    assert expected in err.message
    assert err.path.name == "s.yaml" and err.line == 3
    assert str(err).count("\n") == 0


@pytest.mark.parametrize("aliases,line,expected", [
    ("good:\n  - exec_current: 'true'\nexec_chroot:\n  - exec_current: 'true'\n", 3,
     "alias 'exec_chroot' would hide the built-in"),
    ("empty: []\n", 1, "alias 'empty' must be a non-empty list of commands"),
    ("bad:\n  - exec_current: 'true'\n  - exec_nowhere: x\n", 3, "unknown command 'exec_nowhere'"),
    ("- not-a-mapping\n", 1, "an alias file is a mapping"),
])
def test_malformed_alias_file_names_its_line(tree, aliases, line, expected):
    err = _error(_alias_recipe(tree, "exec_current: 'true'", aliases))
    assert expected in err.message
    assert err.path.name == "aliases.yaml" and err.line == line


def test_alias_file_not_found_and_defined_twice(tree):
    tree.write("s.yaml", "- a:\n    - exec_current: 'true'\n")
    path = tree.recipe("- s\n")
    path.write_text("aliases: [nowhere]\n" + path.read_text())
    err = _error(path)
    assert "alias file 'nowhere' not found" in err.message and err.line == 1
    tree.write("one.yaml", "x:\n  - exec_current: 'true'\n")
    tree.write("two.yaml", "y:\n  - exec_current: 'true'\nx:\n  - exec_current: 'true'\n")
    path.write_text(path.read_text().replace("[nowhere]", "[one, two]"))
    err = _error(path)
    assert "alias 'x' is already defined at" in err.message
    assert err.path.name == "two.yaml" and err.line == 3


def test_alias_arguments_that_break_a_command_shape(tree):
    err = _error(_alias_recipe(tree, "need: 'rm -rf /'",
                               "need:\n  - check_cmd: '@1'\n"))
    assert "alias 'need'" in err.message and "check_cmd takes a command name" in err.message
    assert err.path.name == "s.yaml" and err.line == 3


# --- when: a macrostep file's condition on a variable's words ------------------------------


def test_when_applies_to_every_microstep_of_its_file_and_its_includes(tree):
    tree.write("inner.yaml", "- when: {arch: amd64}\n- i:\n    - exec_current: 'true'\n")
    tree.write("s.yaml", """
        - when: {output: [qcow2, raw]}
        - a:
            - exec_current: 'true'
        - include: inner
        """)
    micro_a, micro_i = load_recipe(tree.recipe("- s\n")).macrosteps[0].microsteps
    assert [str(c) for c in micro_a.when] == ["output has qcow2 or raw"]
    assert [str(c) for c in micro_i.when] == ["output has qcow2 or raw", "arch has amd64"]


@pytest.mark.parametrize("body,line,expected", [
    ("- when: iso\n", 1, "'when' takes a mapping of variable -> word"),
    ("- when: {}\n", 1, "'when' takes a mapping"),
    ("- when: {output: [iso, {a: b}]}\n", 1, "when: 'output' takes a word or a list of words"),
    ("- when: {output: 'two words'}\n", 1, "takes a word or a list of words"),
    ("- when: {output: []}\n", 1, "takes a word or a list of words"),
    ("- a:\n    - exec_current: 'true'\n- when: {output: iso}\n", 3,
     "'when' must be the first entry"),
    ("- when: {output: iso}\n- when: {output: tgz}\n", 2, "'when' must be the first entry"),
])
def test_malformed_when(tree, body, line, expected):
    tree.write("s.yaml", body + "- z:\n    - exec_current: 'true'\n")
    err = _error(tree.recipe("- s\n"))
    assert expected in err.message and err.path.name == "s.yaml" and err.line == line


def test_choices_refuse_a_value_when_the_recipe_loads(tree):
    tree.write("s.yaml", "- a:\n    - exec_current: 'true'\n")
    path = tree.recipe("- s\n", extra_globals="suite: trixie\n")
    path.write_text(path.read_text() + "choices:\n  suite: [trixie, forky]\n")
    assert load_recipe(path, {"suite": "forky"}).variables["suite"] == "forky"
    err = _error(path, overrides={"suite": "bookworm"})
    assert err.exit_status == 2 and err.line == path.read_text().splitlines().index(
        "  suite: [trixie, forky]") + 1
    assert err.message.endswith("suite 'bookworm' is not supported by this recipe "
                                "(choices: trixie, forky)")
    sibling = path.parent / "other.yaml"
    sibling.write_text("choices:\n  suite: [bookworm]\n")
    assert _error(path, overrides={"suite": "bookworm"}).message.endswith(
        "; other.yaml beside it takes suite=bookworm")


@pytest.mark.parametrize("section, message", [
    ("choices: [suite]\n", "'choices' must map variables"),
    ("choices:\n  nothing: [a]\n", "choices: 'nothing' is not a global variable"),
    ("choices:\n  suite: trixie\n", "choices: 'suite' must list the values"),
    ("choices:\n  suite: []\n", "choices: 'suite' must list the values"),
])
def test_malformed_choices_are_one_line_errors(tree, section, message):
    tree.write("s.yaml", "- a:\n    - exec_current: 'true'\n")
    path = tree.recipe("- s\n", extra_globals="suite: trixie\n")
    path.write_text(path.read_text() + section)
    assert message in _error(path).message
