"""The managed block between marker lines: found, replaced in place or at the end, once."""

from autoconf.block import BEGIN, END, find_block

FILE = f"127.0.0.1 localhost\n{BEGIN}\n10.0.0.1 oar-server\n{END}\n::1 ip6-localhost\n"


def test_a_text_is_cut_around_its_block():
    block = find_block(FILE)
    assert block.found
    assert block.before == ("127.0.0.1 localhost",)
    assert block.inside == ("10.0.0.1 oar-server",)
    assert block.after == ("::1 ip6-localhost",)


def test_a_text_without_a_block_is_all_before_it():
    block = find_block("a\nb\n")
    assert (block.found, block.before, block.inside, block.after) == (False, ("a", "b"), (), ())
    assert block.replaced(["x"]) == f"a\nb\n{BEGIN}\nx\n{END}\n"


def test_the_block_is_replaced_where_it_was_and_the_rest_is_kept():
    assert find_block(FILE).replaced(["10.0.0.2 oar-server"]) == (
        f"127.0.0.1 localhost\n{BEGIN}\n10.0.0.2 oar-server\n{END}\n::1 ip6-localhost\n")
    assert find_block(FILE).replaced(["10.0.0.1 oar-server"]) == FILE


def test_at_end_moves_the_block_after_one_blank_line_and_is_stable():
    text = find_block(FILE + "\n\n").replaced(["rule"], at_end=True)
    assert text == f"127.0.0.1 localhost\n::1 ip6-localhost\n\n{BEGIN}\nrule\n{END}\n"
    assert find_block(text).replaced(["rule"], at_end=True) == text


def test_two_blocks_become_one_and_an_unterminated_block_runs_to_the_end():
    twice = f"{BEGIN}\na\n{END}\nkept\n{BEGIN}\nb\n{END}\n"
    assert find_block(twice).inside == ("a", "b")
    assert find_block(twice).replaced(["c"]) == f"{BEGIN}\nc\n{END}\nkept\n"
    open_ended = find_block(f"x\n{BEGIN}\na\nb\n")
    assert (open_ended.before, open_ended.inside, open_ended.after) == (("x",), ("a", "b"), ())


def test_an_end_marker_outside_a_block_is_an_ordinary_line():
    assert find_block(f"{END}\nx\n").before == (END, "x")
