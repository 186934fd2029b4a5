"""What a session needs of its link to the workers (`Link`): the real one is
master/transport.py's WorkerLink (ZeroMQ); tests drive a session with an in-process fake that
delivers scripted messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from bcgc_sim.wire.protocol import MessageType

from .peers import Peer, PeerTable, Received


class Link(Protocol):
    peers: PeerTable  # every rank's record; `dead` is peers.dead

    @property
    def dead(self) -> set[int]: ...

    def send(
        self, rank: int, kind: MessageType, header: dict, array: np.ndarray | None = None
    ) -> None:
        """One message to one rank (dropped if the rank is gone)."""

    def broadcast(
        self, kind: MessageType, header: dict, array: np.ndarray | None, ranks: Iterable[int]
    ) -> None:
        """The same message to every rank in `ranks`."""

    def receive(self, timeout_ms: int) -> Received | None:
        """The next message of a live rank, or None after timeout_ms."""

    def check_liveness(self, exited: set[int], heartbeat_s: float, liveness: int) -> list[Peer]:
        """Declare dead the live ranks whose process exited or that fell silent; returns them."""

    def reject(self, reason: str, source: int | bytes | None, detail: str = "") -> None:
        """Count and log one rejected message."""
