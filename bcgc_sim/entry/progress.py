"""Progress of long model work on stderr, for `bcgc predict` and `bcgc plan`.

`ProgressLine` is a bcgc_sim.progress.Progress callback: a call only records what runs now, a
thread of its own draws it, so a step that reports rarely still shows its elapsed time. Nothing
appears during the first `delay` seconds (quick commands stay quiet). Then, on a terminal, one
line redrawn in place and erased at the end; elsewhere (a pipe, a file) one plain line every
`interval` seconds. Only stderr is written: stdout keeps the table or the --json document.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

DELAY_S = 2.0  # quiet for this long
INTERVAL_S = 5.0  # one line this often when stderr is not a terminal
REDRAW_S = 0.2  # the terminal line's refresh


class ProgressLine:
    """Shows the latest (task, done, total) with the elapsed time; use it as a context manager."""

    def __init__(
        self,
        stream: TextIO | None = None,
        prefix: str = "bcgc",
        delay: float | None = None,
        interval: float | None = None,
    ) -> None:
        """`delay` and `interval` in seconds (default DELAY_S and INTERVAL_S)."""
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self.delay = DELAY_S if delay is None else delay
        self.live = _is_terminal(self.stream)
        self.period = REDRAW_S if self.live else (INTERVAL_S if interval is None else interval)
        self._state: tuple[str, float, float] = ("starting", 0, 0)
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._draw_until_stopped, daemon=True)
        self._drawn = False  # a terminal line that must be erased

    def __call__(self, task: str, done: float = 0, total: float = 0) -> None:
        self._state = (task, done, total)  # one assignment: the drawing thread reads it whole

    def __enter__(self) -> ProgressLine:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._drawn:
            self._write("\r\x1b[K")

    def text(self) -> str:
        """The line as drawn now: prefix, task, count or percentage, elapsed seconds."""
        task, done, total = self._state
        count = ""
        if total > 0:
            count = f" {100 * done / total:.0f}%" if total >= 100 else f" {done:g}/{total:g}"
        return f"{self.prefix}: {task}{count} ({time.monotonic() - self._start:.0f} s)"

    def _draw_until_stopped(self) -> None:
        if self._stop.wait(self.delay):
            return
        while True:
            if self.live:
                self._write("\r" + self.text()[: _width(self.stream) - 1] + "\x1b[K")
                self._drawn = True
            else:
                self._write(self.text() + "\n")
            if self._stop.wait(self.period):
                return

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: progress is not worth a failure
            self._stop.set()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 80
