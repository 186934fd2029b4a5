"""What a decoder did with one message: the one `Outcome` of both protocols' decoders
(master/decoder.py for the BCGC slots, bcgc_sim.partial.decoder for partial-gc). Its values are
the `status` column of messages.csv."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    USED = "used"  # taken into the decode (BCGC: among the first N - s arrivals of its slot)
    LATE = "late"  # the slot, chunk or gradient was already complete (R1: or after the stop)
    DUPLICATE = "duplicate"  # this worker already sent this slot, chunk or upload
    REJECTED = "rejected"  # unknown worker, slot or chunk, out of order, unexpected, wrong shape
