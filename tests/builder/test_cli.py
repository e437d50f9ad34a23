"""build-iso's command line: listing, dry runs and one-line errors with exit status 2."""

import pytest

from builder.cli import main
from tests.boot.test_bounded import ALIAS_BOMB


@pytest.fixture
def recipe(tree):
    tree.write("boot.yaml", "- a:\n    - exec_current: echo $$greeting\n- b:\n"
                            "    - exec_chroot: 'true'\n")
    tree.write("exp.yaml", "- pack:\n    - exec_appliance: tar -cf $$build_dir/x.tar .\n")
    return tree.recipe("- boot\n- exp: {checkpoint: false}\n", extra_globals="greeting: hi\n")


def test_list_prints_steps_in_order(recipe, capsys):
    assert main([str(recipe), "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(" 1. boot") and out[1:3] == ["      - a", "      - b"]
    assert out[3].startswith(" 2. exp") and out[3].endswith("(no checkpoint)")


def test_dry_run_prints_the_compiled_scripts(recipe, capsys):
    assert main([str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "echo hi" in out and "__bi_chroot true" in out
    assert out.count("# macrostep ") == 2 and "trap __bi_exit EXIT" in out


@pytest.mark.parametrize("args,message", [
    (["--from", "boot"], "--from needs --workdir"),
    (["--breakpoint", "nope"], "--breakpoint nope: no macrostep 'nope' (steps: boot, exp)"),
    (["--to", "boot/zz"], "--to boot/zz: macrostep 'boot' has no microstep 'zz'"),
    (["--set", "bogus=1"], "the recipe has no variable 'bogus'"),
])
def test_bad_options_are_one_line_errors(recipe, capsys, args, message):
    assert main([str(recipe), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_malformed_recipe_exit_2_one_line(tree, capsys):
    path = tree.recipes / "r.yaml"
    path.write_text("global: [\n")
    assert main([str(path), "--list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"build-iso: error: {path}:")


def test_missing_recipe(tmp_path, capsys):
    assert main([str(tmp_path / "none.yaml")]) == 2
    assert "recipe not found" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["recipe", "macrostep"])
@pytest.mark.parametrize("data,message", [
    (b"global: {distrib: caf\xe9}\n", "not UTF-8 text"),
    (b"- a:\n    - exec_current: echo \x00\n", "not a text file"),
    (ALIAS_BOMB, "anchors and aliases expand to more than"),
])
def test_unreadable_input_is_one_line_exit_2(tree, capsys, where, data, message):
    path = tree.recipe("- boot\n")
    if where == "macrostep":
        path = tree.recipes / "boot.yaml"
    path.write_bytes(data)
    assert main([str(path if where == "recipe" else tree.recipes / "r.yaml"), "--list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"build-iso: error: {path}:")
    assert message in err[0]


@pytest.mark.parametrize("step,aliases,where", [
    ("- a:\n    - exec_current: 'true'\n    - twice: only-one\n",
     "twice:\n  - exec_current: echo @1 @2\n", "s.yaml:3:"),
    ("- a:\n    - exec_current: 'true'\n", "twice: echo\n", "aliases.yaml:1:"),
    ("- a:\n    - exec_current: 'true'\n- when: {output: iso}\n", "", "s.yaml:3:"),
])
def test_malformed_alias_or_condition_exit_2_one_line(tree, capsys, step, aliases, where):
    tree.write("s.yaml", step)
    tree.write("aliases.yaml", aliases or "noop:\n  - exec_current: 'true'\n")
    path = tree.recipe("- s\n")
    path.write_text("aliases: aliases\n" + path.read_text())
    assert main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("build-iso: error: ") and where in err[0]
