"""Progress of long commands: tqdm's bar on a terminal, plain lines in a log, nothing for quick work."""

from __future__ import annotations

import io

from mpiswim.progress import progress_bar


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def count(stream: io.StringIO, total: int, interval: float | None = None) -> str:
    with progress_bar(total, "render run.gif", "step", stream=stream, interval=interval) as bar:
        for _ in range(total):
            bar.update(1)
    return stream.getvalue()


def test_a_log_gets_plain_lines_without_carriage_returns():
    text = count(io.StringIO(), 5, interval=0.0)
    lines = text.splitlines()
    assert "\r" not in text and lines[-1] == "render run.gif: 5/5 steps (100%), 00:00 elapsed, about 00:00 left"
    assert len(lines) == len(set(lines))  # the final state is not written twice


def test_quick_work_shows_nothing():
    assert count(io.StringIO(), 5) == ""  # over before the first line is due (10 s)
    assert count(Terminal(), 5) == ""  # over before the bar appears (2 s)


def test_a_terminal_gets_a_bar_redrawn_in_place(monkeypatch):
    from mpiswim import progress

    monkeypatch.setattr(progress, "BAR_DELAY", 0.0)
    text = count(Terminal(), 5)
    assert text.startswith("\rrender run.gif:   0%|") and "0/5 [" in text  # tqdm's bar ...
    assert (
        text.endswith("\r") and text.split("\r")[-2].strip() == ""
    )  # ... cleared at the end: the command's summary line follows
