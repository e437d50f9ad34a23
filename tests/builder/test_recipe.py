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
