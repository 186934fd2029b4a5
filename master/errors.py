"""The error that ends a run on the testbed."""

from __future__ import annotations

import logging

from bcgc_sim.errors import UserError

log = logging.getLogger("bcgc.master")


class RunError(UserError):
    """The run cannot go on (an undecodable block, a silent cluster); ends with one line,
    which master.log records (with its time) when the error is raised."""

    def __init__(self, message: str) -> None:
        log.error("the run ends: %s", message)
        super().__init__(message)
