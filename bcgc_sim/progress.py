"""How long work tells how far it is: a callback the library calls and the entry layer shows.

`Progress` is called as progress(task, done, total): `task` names what runs now (a short
phrase such as "bcgc-opt: optimiser"), `done` of `total` steps are finished (total 0: no count,
only the task). The library never prints; bcgc_sim.entry.progress draws it on a terminal or as
a line every few seconds.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, float, float], None]


def report(progress: Progress | None, task: str, done: float = 0, total: float = 0) -> None:
    """Call `progress` if there is one."""
    if progress is not None:
        progress(task, done, total)
