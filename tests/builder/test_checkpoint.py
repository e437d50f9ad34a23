"""Checkpoint keys change exactly when something that produced the layer changed."""

from pathlib import Path

from builder.checkpoint import CheckpointStore, project_root, step_key, tree_digest
from builder.compile import compile_macrostep
from builder.recipe import load_recipe
from builder.variables import Variables


def _keys(path: Path) -> list[str]:
    recipe = load_recipe(path)
    v = Variables(recipe.variables, recipe.variable_lines, recipe.path,
                  {"workdir": "@workdir@", "cwd": "@cwd@", "recipe_dir": str(recipe.dir)})
    keys, prev = [], "x"
    for m in recipe.macrosteps:
        prev = step_key(prev, compile_macrostep(m, v), v, project_root(recipe.dir))
        keys.append(prev)
    return keys


def _tree(tree):
    tree.write("a.yaml", "- a:\n    - exec_current: echo $$greeting\n")
    tree.write("b.yaml", "- b:\n    - exec_current: cp -r $$src $$workdir/\n")
    tree.write("c.yaml", "- c:\n    - exec_current: echo c\n")
    (tree.root / "src").mkdir()
    (tree.root / "src" / "agent.py").write_text("print(1)\n")
    return tree.recipe("- a\n- b\n- c\n",
                       extra_globals=f"greeting: hi\nsrc: {tree.root}/src\nunused: 1\n")


def test_editing_a_step_changes_its_key_and_later_ones_only(tree):
    path = _tree(tree)
    k1 = _keys(path)
    assert k1 == _keys(path)
    (tree.recipes / "b.yaml").write_text("- b:\n    - exec_current: cp -a $$src $$workdir/\n")
    k2 = _keys(path)
    assert k2[0] == k1[0] and k2[1] != k1[1] and k2[2] != k1[2]


def test_a_used_variable_changes_its_users_only(tree):
    path = _tree(tree)
    k1 = _keys(path)
    path.write_text(path.read_text().replace("greeting: hi", "greeting: hello"))
    k2 = _keys(path)
    assert all(a != b for a, b in zip(k1, k2, strict=True))
    path.write_text(path.read_text().replace("unused: 1", "unused: 2"))
    assert _keys(path) == k2


def test_source_files_named_by_a_variable_are_part_of_the_key(tree):
    path = _tree(tree)
    k1 = _keys(path)
    (tree.root / "src" / "agent.py").write_text("print(2)\n")
    k2 = _keys(path)
    assert k2[0] == k1[0] and k2[1] != k1[1]


def test_tree_digest_sees_content_names_modes_and_links_but_not_bytecode(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("x")
    seen = {tree_digest(tmp_path)}
    (tmp_path / "sub" / "f").write_text("y")  # content
    seen.add(tree_digest(tmp_path))
    (tmp_path / "sub" / "f").rename(tmp_path / "sub" / "g")  # name
    seen.add(tree_digest(tmp_path))
    (tmp_path / "sub" / "g").chmod(0o755)  # mode
    seen.add(tree_digest(tmp_path))
    (tmp_path / "link").symlink_to("sub/g")  # a symlink, then where it points
    seen.add(tree_digest(tmp_path))
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to("sub")
    seen.add(tree_digest(tmp_path))
    assert len(seen) == 6
    last = tree_digest(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "junk.pyc").write_text("y")
    assert tree_digest(tmp_path) == last


def test_store_save_get_clear(tmp_path: Path):
    store = CheckpointStore(tmp_path / "cp")
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "file").write_text("data")
    env = tmp_path / "env"
    env.write_text("declare -x A=1\n")
    assert store.get("k") is None
    cp = store.save("k", layer, env, "step", "r")
    assert not layer.exists() and (cp.layer / "file").read_text() == "data"
    assert store.get("k") == cp
    assert store.clear() == 1 and store.get("k") is None


def test_keys_do_not_depend_on_where_the_project_lies(tree, tmp_path):
    import io
    import shutil

    from builder.engine import BuildOptions, Engine
    from builder.progress import Progress

    tree.write("a.yaml", "- a:\n    - exec_current: cp -r $$src $$workdir/; echo $$out\n")
    (tree.root / "src").mkdir()
    (tree.root / "src" / "f").write_text("1")
    tree.recipe("- a\n", extra_globals="src: $$recipe_dir/../src\nout: $$cwd/out\n")
    copy = tmp_path / "elsewhere"
    shutil.copytree(tree.root, copy)

    def keys(project: Path, cwd: Path) -> list[str]:
        recipe = load_recipe(project / "recipes" / "r.yaml")
        return Engine(recipe, BuildOptions(cwd=cwd), Progress(stream=io.StringIO())).keys()

    assert keys(tree.root, tmp_path) == keys(copy, copy)
    (copy / "src" / "f").write_text("2")
    assert keys(tree.root, tmp_path) != keys(copy, copy)


def test_prune_drops_only_this_recipes_unused_checkpoints(tmp_path: Path):
    store = CheckpointStore(tmp_path / "cp")
    env = tmp_path / "env"
    env.write_text("")
    for key, recipe in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        layer = tmp_path / key
        layer.mkdir()
        store.save(key, layer, env, "step", recipe)
    assert store.prune("a", keep={"a2"}) == 1
    assert store.get("a1") is None and store.get("a2") and store.get("b1")
    with store.in_use():   # a build is running: nothing is removed under its feet
        assert store.prune("a", keep=set()) == 0
    assert store.get("a2")


def test_aliases_and_conditions_change_keys_exactly_when_the_commands_do(tree):
    path = _tree(tree)
    inline = _keys(path)
    # The same commands said through an alias: same keys.
    tree.write("aliases.yaml", "say:\n  - exec_current: echo @1\n")
    tree.write("a.yaml", "- a:\n    - say: $$greeting\n")
    path.write_text("aliases: aliases\n" + path.read_text())
    assert _keys(path) == inline
    # Editing the alias changes its users' keys (and the later ones), a condition that holds
    # changes nothing, and one that fails drops the commands: the key changes.
    tree.write("aliases.yaml", "say:\n  - exec_current: printf '%s\\n' @1\n")
    edited = _keys(path)
    assert edited[0] != inline[0] and edited[1] != inline[1]
    tree.write("aliases.yaml", "say:\n  - exec_current: echo @1\n")
    tree.write("c.yaml", "- when: {arch: amd64}\n- c:\n    - exec_current: echo c\n")
    assert _keys(path) == inline
    tree.write("c.yaml", "- when: {arch: arm64}\n- c:\n    - exec_current: echo c\n")
    skipped = _keys(path)
    assert skipped[:2] == inline[:2] and skipped[2] != inline[2]


def test_a_build_secrets_file_outside_the_project_is_part_of_the_key_by_content(tree, tmp_path):
    tree.write("a.yaml", "- a:\n    - exec_current: use $$secrets\n")
    given = tmp_path / "elsewhere" / "secrets.yaml"
    given.parent.mkdir()
    given.write_text("token: 1\n")
    path = tree.recipe("- a\n", extra_globals=f"secrets: {given}\n")
    first = _keys(path)
    given.write_text("token: 2\n")
    assert _keys(path) != first
    given.write_text("token: 1\n")
    assert _keys(path) == first
