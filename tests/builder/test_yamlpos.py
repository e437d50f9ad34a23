from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.yamlpos import MAX_FILE_BYTES, load_yaml
from tests.boot.test_bounded import ALIAS_BOMB


def test_values_remember_their_line(tmp_path: Path):
    f = tmp_path / "x.yaml"
    f.write_text("a: 1\nb:\n  - first\n  - {c: $$d}\n")
    doc = load_yaml(f)
    assert doc == {"a": 1, "b": ["first", {"c": "$$d"}]}
    assert doc.key_lines == {"a": 1, "b": 2}
    assert doc["b"][0].line == 3
    assert doc["b"][1]["c"].line == 4


def test_syntax_error_names_the_line(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("a: 1\nb: [unclosed\nc: 2\n")
    with pytest.raises(RecipeError) as exc:
        load_yaml(f)
    assert str(f) in exc.value.message
    assert exc.value.line == 3 or exc.value.line == 2


def test_duplicate_key_is_an_error(tmp_path: Path):
    f = tmp_path / "dup.yaml"
    f.write_text("a: 1\na: 2\n")
    with pytest.raises(RecipeError, match="duplicate key 'a'") as exc:
        load_yaml(f)
    assert exc.value.line == 2


def test_missing_file(tmp_path: Path):
    with pytest.raises(RecipeError, match="file not found"):
        load_yaml(tmp_path / "nope.yaml")


@pytest.mark.parametrize("data,message", [
    (b"- a:\n    - exec_current: echo caf\xe9\n", ":2: not UTF-8 text (byte 0xe9)"),
    (b"- a:\n    - exec_current: echo \x00\n", ":2: not a text file (a NUL byte)"),
    (b"\x1f\x8b\x08\x00\x00\x00", ":1: not UTF-8 text"),
    (b"a: !!python/object:os.system x\n", ":1: invalid YAML: could not determine a constructor"),
    (b"a: !!int abc\n", ":1: invalid YAML"),
])
def test_bad_bytes_are_one_line_naming_file_and_line(tmp_path: Path, data, message):
    f = tmp_path / "bin.yaml"
    f.write_bytes(data)
    with pytest.raises(RecipeError) as exc:
        load_yaml(f)
    assert exc.value.message.startswith(f"{f}{message}")
    assert "\n" not in exc.value.message


def test_alias_bomb_is_refused(tmp_path: Path):
    f = tmp_path / "lol.yaml"
    f.write_bytes(ALIAS_BOMB)
    with pytest.raises(RecipeError, match="anchors and aliases expand to more than") as exc:
        load_yaml(f)
    assert exc.value.path == f


def test_oversized_file_is_refused(tmp_path: Path):
    f = tmp_path / "big.yaml"
    f.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(RecipeError, match=f"larger than {MAX_FILE_BYTES} bytes"):
        load_yaml(f)


def test_directory_is_refused(tmp_path: Path):
    with pytest.raises(RecipeError, match="is a directory"):
        load_yaml(tmp_path)
