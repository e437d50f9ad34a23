"""The variables a macrostep leaves for the next ones: the recipe's, never the engine's."""

from __future__ import annotations

import subprocess

import pytest

from builder.envfile import keep_recipe_variables, recipe_variables

EXPORTED = """\
declare -x HOME="/root"
declare -x KERNEL="6.1.0-27-amd64"
declare -x MOTD="two
lines"
declare -x PATH="/usr/sbin:/usr/bin"
declare -x __bi_root="/w/rootfs"
declare -x EMPTY
"""


def test_only_the_recipe_variables_stay_multi_line_values_whole():
    assert recipe_variables(EXPORTED) == (
        'declare -x KERNEL="6.1.0-27-amd64"\ndeclare -x MOTD="two\nlines"\ndeclare -x EMPTY\n')


def test_a_missing_file_is_left_missing_and_a_clean_one_untouched(tmp_path):
    keep_recipe_variables(tmp_path / "none.env")
    assert not (tmp_path / "none.env").exists()
    clean = tmp_path / "clean.env"
    clean.write_text('declare -x KERNEL="6.1"\n')
    before = clean.stat().st_mtime_ns
    keep_recipe_variables(clean)
    assert clean.stat().st_mtime_ns == before


@pytest.mark.spawns
def test_what_bash_exports_reads_back_as_the_recipe_variables(tmp_path):
    env = tmp_path / "out.env"
    subprocess.run(["bash", "-c", f'export A="x y" B=$\'l1\\nl2\'; export -p > {env}'],
                   check=True, env={"PATH": "/usr/bin:/bin", "HOME": "/root"})
    keep_recipe_variables(env)
    out = subprocess.run(["bash", "-c", f'source {env}; printf "%s|%s|%s" "$A" "$B" "$PATH"'],
                         capture_output=True, text=True, env={"PATH": "/bin"})
    assert out.stdout == "x y|l1\nl2|/bin"
