"""Compiling a macrostep: one script, markers per microstep, commands as bash understands them."""

import subprocess
from pathlib import Path

import pytest

from builder.compile import Runtime, chroot_fstab, compile_macrostep, script_text
from builder.errors import RecipeError
from builder.recipe import load_recipe
from builder.variables import Variables


def _compiled(tree, body: str, **kw):
    tree.write("s.yaml", body)
    recipe = load_recipe(tree.recipe("- s\n", extra_globals="greeting: 'it''s \"ok\"'\n"))
    variables = Variables(recipe.variables, recipe.variable_lines, recipe.path,
                          {"workdir": "/w/rootfs", "cwd": "/c"})
    return compile_macrostep(recipe.macrosteps[0], variables, **kw)


BODY = """
- one:
    - exec_current: echo "$$greeting"
    - set_var: [GREETING, "$$greeting from $(uname -s)"]
- two:
    - write_file: [/etc/motd, "$$greeting"]
    - exec_chroot: echo 'single' "double" $HOME
- three:
    - append_file: [etc/motd, more]
"""


def test_markers_and_sites(tree):
    code = _compiled(tree, BODY)
    assert code.body.count("__bi_begin ") == 3
    assert "__bi_begin 2" in code.body
    site = code.site(2, 2)
    assert site.command.first_line == "exec_chroot: echo 'single' \"double\" $HOME"
    assert code.used_variables == {"greeting"}


def test_selection_compiles_only_those_microsteps(tree):
    code = _compiled(tree, BODY, first=1, last=2)
    assert "__bi_begin 1" not in code.body and "__bi_begin 2" in code.body
    assert "__bi_begin 3" not in code.body


@pytest.mark.spawns
def test_script_is_valid_bash(tree, tmp_path: Path):
    code = _compiled(tree, BODY)
    rt = Runtime(root=Path("/w/rootfs"), cwd=Path("/c"), env_in=tmp_path / "in.env",
                 env_out=tmp_path / "out.env", lowers=(Path("/l1"), Path("/l0")),
                 upper=Path("/u"), overlay_work=Path("/o"), chroot_fstab=tmp_path / "fstab")
    script = tmp_path / "s.sh"
    script.write_text(script_text(code, rt))
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "lowerdir=/l1:/l0,upperdir=/u,workdir=/o" in script.read_text()


@pytest.mark.spawns
def test_set_var_value_reads_as_double_quoted_bash(tree, tmp_path: Path):
    code = _compiled(tree, '- a:\n    - set_var: [X, "say \\"hi\\" $((1+2)) $(echo sub)"]\n')
    line = next(ln for ln in code.body.splitlines() if ln.startswith("export X="))
    out = subprocess.run(["bash", "-c", f"{line}; printf %s \"$X\""], capture_output=True,
                         text=True)
    assert out.stdout == 'say "hi" 3 sub'


def test_the_chroot_mounts_are_one_table_parents_first_with_blanks_escaped():
    table = chroot_fstab(Path("/var/tmp/my build/rootfs")).splitlines()
    assert [row.split()[1] for row in table] == [
        "/var/tmp/my\\040build/rootfs/" + d for d in ("proc", "sys", "dev", "dev/pts", "dev/shm")]
    assert table[2].split()[::2] == ["/dev", "none", "0"] and "bind" in table[2]
    assert table[4].split()[2:4] == ["tmpfs", "mode=1777"]


def test_when_skips_the_microsteps_whose_condition_fails(tree):
    tree.write("s.yaml", """
        - when: {output: [iso, qcow2]}
        - a:
            - exec_current: echo made
        """)
    for output, runs in (("tgz", False), ("[tgz, qcow2]", True), ("iso", True)):
        recipe = load_recipe(tree.recipe("- s\n").parent / "r.yaml",
                             {"output": output.strip("[]").replace(" ", "")})
        variables = Variables(recipe.variables, recipe.variable_lines, recipe.path, {})
        code = compile_macrostep(recipe.macrosteps[0], variables)
        assert ("echo made" in code.body) is runs
        assert ("skipped: not (output has iso or qcow2)" in code.body) is not runs
        assert "output" in code.used_variables


def test_when_on_an_undefined_variable_names_the_file_and_line(tree):
    tree.write("s.yaml", "- when: {nothing: x}\n- a:\n    - exec_current: 'true'\n")
    recipe = load_recipe(tree.recipe("- s\n"))
    variables = Variables(recipe.variables, recipe.variable_lines, recipe.path, {})
    with pytest.raises(RecipeError) as exc:
        compile_macrostep(recipe.macrosteps[0], variables)
    assert "undefined variable '$$nothing'" in exc.value.message
    assert exc.value.path.name == "s.yaml" and exc.value.line == 1


def test_when_with_an_empty_word_runs_only_while_the_variable_is_empty(tree):
    tree.write("s.yaml", """
        - when: {secrets: ""}
        - a:
            - exec_current: echo drawn
        """)
    for given, runs in (("", True), ("/etc/build-secrets.yaml", False)):
        recipe = load_recipe(tree.recipe("- s\n", extra_globals='secrets: ""\n').parent / "r.yaml",
                             {"secrets": given})
        variables = Variables(recipe.variables, recipe.variable_lines, recipe.path, {})
        code = compile_macrostep(recipe.macrosteps[0], variables)
        assert ("echo drawn" in code.body) is runs
        assert ("skipped: not (secrets has (empty))" in code.body) is not runs
