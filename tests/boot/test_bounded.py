"""Bounded parsing: bad bytes, alias bombs, deep nesting, oversized input are one-line refusals."""

import pytest

from boot import bounded

# Nine levels of nine aliases: 9**9 (387 million) strings once expanded, 600 bytes as text.
ALIAS_BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{','.join(['*' + prev] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)).encode()


def refusal(call, *args) -> bounded.InputError:
    with pytest.raises(bounded.InputError) as exc:
        call(*args)
    assert "\n" not in exc.value.message
    return exc.value


def test_plain_yaml_is_read():
    data = b"a: 1\nb: [x, {c: true}]\n"
    assert bounded.load_yaml(data, 1024) == {"a": 1, "b": ["x", {"c": True}]}


def test_small_aliases_are_expanded():
    assert bounded.load_yaml(b"a: &x [1, 2]\nb: *x\n", 1024) == {"a": [1, 2], "b": [1, 2]}


def test_alias_bomb_is_refused_before_expansion():
    assert len(ALIAS_BOMB) < 1024
    error = refusal(bounded.load_yaml, ALIAS_BOMB, 1024)
    assert f"expand to more than {bounded.MAX_VALUES} values" in error.message


def test_alias_that_contains_itself_is_refused():
    error = refusal(bounded.load_yaml, b"a: 1\nb: &b [*b]\n", 1024)
    assert "contains it" in error.message and error.line == 2


@pytest.mark.parametrize("data", [
    b"x: " + b"[" * 100 + b"]" * 100,
    b"- " * 100 + b"leaf\n",
])
def test_deep_nesting_is_refused(data):
    assert "nested deeper than" in refusal(bounded.load_yaml, data, 4096).message


@pytest.mark.parametrize("data,message,line", [
    (b"a: 1\nb: caf\xe9\n", "not UTF-8 text (byte 0xe9)", 2),
    (b"\x1f\x8b\x08\x00\x00\x00", "not UTF-8 text (byte 0x8b)", 1),
    (b"a: 1\n\nb: x\x00y\n", "not a text file (a NUL byte)", 3),
    (b"a: \x01\n", "the character '\\x01' is not allowed", 1),
    (b"a: 1\nb: [x\n", "invalid YAML", 3),
    (b"a: !!python/object:os.system x\n", "invalid YAML: could not determine a constructor", 1),
])
def test_bad_bytes_and_syntax_name_the_line(data, message, line):
    error = refusal(bounded.load_yaml, data, 1024)
    assert message in error.message and error.line == line


def test_oversized_input_is_refused():
    assert "larger than 10 bytes" in refusal(bounded.text, b"a: 12345678\n", 10).message


def test_read_bytes_stops_after_the_limit(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    data = bounded.read_bytes(big, 100)
    assert len(data) == 101
    refusal(bounded.text, data, 100)


def test_json_is_read():
    assert bounded.load_json(b'{"a": [1, {"b": null}]}', 1024) == {"a": [1, {"b": None}]}


@pytest.mark.parametrize("data,message", [
    (b"[" * 5000 + b"]" * 5000, "nested deeper than"),
    (b"[" * 70 + b"]" * 70, "nested deeper than"),
    (b'{"a": ', "not JSON"),
    (b'{"a": "\xff"}', "not UTF-8 text"),
    (b"1" * 5000, "not usable JSON"),
    (b'{"a": "x"}' + b" " * 20000, "larger than 16384 bytes"),
])
def test_bad_json_is_refused(data, message):
    assert message in refusal(bounded.load_json, data, 16384).message
