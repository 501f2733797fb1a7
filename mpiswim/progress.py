"""Progress of long commands (`mpiswim render`, `mpiswim evaluate`), shown on stderr with tqdm.

On a terminal it is tqdm's usual bar, redrawn in place. When stderr is not a
terminal (a log file, a batch job's output, a pipe) a redrawn bar would pile
up as one long line of carriage returns, so the same numbers are written as
plain lines instead, one every LOG_INTERVAL seconds. Either way nothing is
shown for work that is over within its first seconds (tqdm's `delay`), so
quick commands and the tests print no progress at all.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

BAR_DELAY = 2.0  # seconds before a bar appears on a terminal
LOG_INTERVAL = 10.0  # seconds between two plain lines when stderr is not a terminal
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit}s ({percentage:.0f}%), {elapsed} elapsed, about {remaining} left"


class Lines:
    """A file for tqdm that turns its in-place redraws ('\\r' + text) into plain lines of `stream`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""  # tqdm redraws the final state when it closes: that line is not written twice

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(
    total: int, description: str, unit: str, stream: TextIO | None = None, interval: float | None = None
) -> tqdm:
    """A tqdm counter of `total` `unit`s: a bar if `stream` (default stderr) is a terminal,
    else a plain line every `interval` seconds (default LOG_INTERVAL)."""
    stream = stream or sys.stderr
    interval = LOG_INTERVAL if interval is None else interval
    if stream.isatty():
        return tqdm(total=total, desc=description, unit=unit, file=stream, delay=BAR_DELAY, leave=False)
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=Lines(stream),
        delay=interval,
        mininterval=interval,
        bar_format=LINE_FORMAT,
    )
