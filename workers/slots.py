"""The BCGC job of a worker (every slot scheme: bcgc, tandon, uncoded, ...): one BLOCK per slot
of its plan, the slot's coded partial derivatives (workers/compute.py), in slot order. Any
message from the master while waiting (a newer theta, a new plan, STOP) interrupts the
iteration."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from bcgc_sim.model.layout import Slot
from bcgc_sim.problems import ProblemData
from bcgc_sim.wire.protocol import SLOTS_SETUP_HEADER, Message, MessageType, check
from bcgc_sim.wire.shm import record_bytes

from .compute import SlotComputer
from .loop import Port, Stamp


class SlotJob:
    kind = MessageType.BLOCK
    waits_after = False

    def __init__(self, computer: SlotComputer, slots: list[Slot]) -> None:
        self.computer = computer
        self.slots = slots
        self.sent_bytes = sum(record_bytes(8 * (s.stop - s.start)) for s in slots)

    @classmethod
    def from_setup(cls, h: dict) -> SlotJob:
        """The job a SETUP describes (checked against SLOTS_SETUP_HEADER)."""
        check(h, SLOTS_SETUP_HEADER)
        slots = [
            Slot(int(a), int(b), int(s), float(load), str(p)) for a, b, s, load, p in h["slots"]
        ]
        data = ProblemData(**h["data"])
        code_rows = {int(s): np.asarray(row, dtype=float) for s, row in h["code_rows"].items()}
        partitions = {str(k): tuple(int(v) for v in b) for k, b in h["partitions"].items()}
        computer = SlotComputer(data, partitions, slots, h["rank"], h["n_workers"], code_rows)
        return cls(computer, slots)

    def begin(self, stamp: Stamp, theta: np.ndarray, repeat: int) -> None:
        self.computer.begin(theta, repeat)  # slowdown: real work

    def units(self) -> Iterable[tuple[int, Slot]]:
        return enumerate(self.slots)

    def load(self, unit: tuple[int, Slot]) -> float:
        return unit[1].load

    def compute(self, unit: tuple[int, Slot]) -> np.ndarray:
        return self.computer.compute(unit[1])

    def message(self, unit: tuple[int, Slot], values: np.ndarray) -> tuple[dict, np.ndarray]:
        return {"slot": unit[0]}, values

    def during(self, port: Port, message: Message) -> Message:
        return message  # every master message abandons the iteration

    def between(self, port: Port, message: Message) -> None:
        """A master message outside an iteration: nothing to answer."""
