from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.yamlpos import load_yaml


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
