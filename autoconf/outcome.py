"""How a role action can end short of done without failing: a background service finishes it.

A node that boots before its server, or whose server does not answer in time, is set up as far
as it can be; oar-live-node (the watcher) registers it when the server answers. The agent says
so on the console and the boot goes on: it is the expected path of machines switched on
together, not an error.
"""


class Pending(Exception):
    """The role waits for something outside this machine; the message says what, and who
    finishes the work."""
