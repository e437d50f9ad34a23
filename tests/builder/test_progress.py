import io

from builder.progress import Progress


def test_plain_progress_and_summary():
    out = io.StringIO()
    p = Progress(stream=out)
    p.restored(1, 3, "bootstrap")
    p.macrostep(2, 3, "configure")
    p.microstep("files")
    p.output("hidden unless verbose")
    p.finished("built")
    p.summary()
    text = out.getvalue()
    assert "[1/3] bootstrap: restored from checkpoint" in text
    assert "[2/3] configure" in text and "  - configure/files" in text
    assert "hidden" not in text
    assert "bootstrap" in text.splitlines()[-3] and "checkpoint" in text.splitlines()[-3]
    assert text.splitlines()[-1].startswith("total")


def test_verbose_shows_output():
    out = io.StringIO()
    p = Progress(stream=out, verbose=True)
    p.output("apt says hi")
    assert "apt says hi" in out.getvalue()
