from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.variables import Variables

P = Path("/r/recipe.yaml")


def _vars(raw, builtins=None):
    return Variables(raw, {k: i + 2 for i, k in enumerate(raw)}, P, builtins or {})


def test_both_forms_lists_and_nested_values():
    v = _vars({"base": "/var/tmp/x", "cache": "$$base/cache", "pkgs": ["a", "b"], "n": 3,
               "on": True})
    used: set[str] = set()
    text = v.substitute("$${cache}-$$pkgs $$n $$on $bash_var", P, 9, used)
    assert text == "/var/tmp/x/cache-a b 3 true $bash_var"
    assert used == {"cache", "pkgs", "n", "on"}
    assert v.used_closure({"cache"}) == {"cache", "base"}


def test_builtins_take_part():
    v = _vars({"a": "$$workdir/etc"}, {"workdir": "/w/rootfs"})
    assert v.substitute("$$a", P, 1) == "/w/rootfs/etc"


def test_undefined_variable_names_it_and_where():
    v = _vars({"a": "1"})
    with pytest.raises(RecipeError) as exc:
        v.substitute("echo $$nope", Path("/r/steps/s.yaml"), 12)
    assert exc.value.message == "/r/steps/s.yaml:12: undefined variable '$$nope'"


def test_cycle_between_globals():
    v = _vars({"a": "$$b", "b": "$$a"})
    with pytest.raises(RecipeError, match="variable cycle: a -> b -> a"):
        v.substitute("$$a", P, 1)


def test_mapping_values_cannot_be_substituted():
    v = _vars({"m": {"k": 1}})
    with pytest.raises(RecipeError, match="'m' is a mapping"):
        v.substitute("$$m", P, 1)
