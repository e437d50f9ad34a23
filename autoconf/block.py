"""The block of a text file that OAR Live manages between two marker lines (/etc/hosts, pg_hba).

OAR Live writes its lines between the markers and never touches the rest of the file:

    # BEGIN oar-live (managed by oar-autoconf)
    ...
    # END oar-live

A BEGIN without its END runs to the end of the file; an END outside a block is an ordinary line.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BEGIN", "END", "Block", "find_block"]

BEGIN = "# BEGIN oar-live (managed by oar-autoconf)"
END = "# END oar-live"


@dataclass(frozen=True)
class Block:
    """A text cut around its managed block(s): the lines before the first, inside, and after."""

    before: tuple[str, ...]
    inside: tuple[str, ...]  # the lines of every managed block, markers left out
    after: tuple[str, ...]  # every line outside the blocks after the first one
    found: bool

    def replaced(self, lines: list[str], *, at_end: bool = False) -> str:
        """The text with one managed block holding `lines`: where the first block was (at the
        end when there was none), or at the end after one blank line with `at_end`."""
        block = [BEGIN, *lines, END]
        if at_end:
            kept = [*self.before, *self.after]
            while kept and not kept[-1].strip():
                kept.pop()
            return "\n".join([*kept, "", *block]) + "\n"
        return "\n".join([*self.before, *block, *self.after]) + "\n"


def find_block(text: str) -> Block:
    """Cut `text` around its managed block(s) (`found` False, all lines before, when none)."""
    before: list[str] = []
    inside: list[str] = []
    after: list[str] = []
    found = within = False
    for line in text.splitlines():
        if line.strip() == BEGIN:
            found = within = True
        elif within and line.strip() == END:
            within = False
        elif within:
            inside.append(line)
        else:
            (after if found else before).append(line)
    return Block(tuple(before), tuple(inside), tuple(after), found)
