"""The master's side of the partial-straggler protocol, variant R1: a pure decoder state machine.

The protocol of Ramamoorthy, Meng & Girimaji (NeurIPS 2024) as *reconstructed* in
spec/partial-gc.md: the paper's body was not available, so the code follows the spec's
recommended interpretations (§6: A1 = variant R1; A2 = a chunk needs >= l distinct processed
copies; A3 = Q_max counts the chunks that *guarantee* coverage; A4 = Latin/Konig ordering;
A5 = coefficient-level NMSE; A9 = the chunk in progress at STOP is discarded; A11 = decode the
sum). Assignment and orderings: `bcgc_sim.partial.assignment`; blocks, combiner and the
worker's upload: `bcgc_sim.partial.coding`; timing model: `bcgc_sim.partial.timing`.

Message pattern on the testbed (the wire carries variant R1 only; the spec's variant R2, §1.6,
which streams one coded block per processed chunk, is not implemented). Set-up, once per run
(master -> worker): the worker's processing order pi_j (list of chunk ids = the data partitions
it stores), l and d. The combiner Phi never leaves the master. Every message below carries run
id and iteration (DESIGN.md); stale ones are counted and dropped. Unlike the BCGC slots, a
COMBINE arriving while a worker waits for a deadline is *not* an abandon signal: the worker must
keep its computed chunk gradients and answer it.

Per iteration, with chunk k of worker j being chunk pi_j(k), k = 1..delta_j:
 1. master -> all workers: ITERATE(theta).
 2. worker j computes g_{pi_j(1)}, g_{pi_j(2)}, ... (full gradients of one data partition each)
    and keeps them in memory (<= delta_j * d floats). After chunk k it sends, at the deadline
        t_start + time_scale * chunk_cycles * T_j * k
    (chunk_cycles = cycles of one chunk gradient; with the BCGC cost model and m = N chunks,
    chunk_cycles * T_j = (M C / N) * T_j * L, i.e. a slot of raw load k * L), a
    NOTICE(run, iteration, worker j, chunk i, position k): header only, no payload.
    The master feeds it to `R1Decoder.notice`.
 3. master decides "stop": exact mode when `decoder.exact_ready` (every chunk has >= l
    processed copies); approximate mode at its deadline or when `decoder.estimated_nmse` <= a
    target. `coefficients = decoder.stop()`; then
    master -> worker j in `coefficients`: COMBINE(iteration, chunks = coefficients[j].chunks,
        beta = coefficients[j].beta, shape (n_j, l) float64; at most delta_j * l floats);
    master -> every other worker: ABANDON(iteration) (its own message type: the testbed's STOP
    ends the worker process). A worker that gets COMBINE also abandons the chunk in progress.
    (Implemented: workers/partial.py, master/partial_session.py.)
 4. worker j -> master: UPLOAD(iteration, z_j), z_j = `r1_upload(coefficients[j], grads, l)`,
    one float vector of ceil(d / l) entries, sent immediately (no deadline). It uses exactly the
    chunks listed, which the worker has computed already (it announced them), so a NOTICE that
    crossed COMBINE on the wire is harmless: the master answers it with Outcome.LATE and the
    worker ignores the extra chunk.
 5. master: `decoder.offer(j, z_j)`; done when `decoder.complete` (every worker in
    `coefficients` has uploaded); `decoder.gradient()` is the exact sum (or the least-squares
    estimate in approximate mode). The time to the exact gradient is therefore
    "last needed NOTICE + one round trip (COMBINE down, UPLOAD up)"; the timing model reports the
    first part and takes the round trip as an explicit `overhead`. Per-iteration prediction, as
    for BCGC: the master regenerates T (stragglers.iteration_cycle_times) and evaluates
    PartialPlan.raw_runtime (timing.exact_times on speed_finish_times) next to the measured time.
 Bytes per worker per iteration: uplink c_j header-only NOTICEs + ceil(d/l) floats; downlink
 ITERATE + COMBINE (n_j chunk ids + n_j * l floats) or ABANDON. A worker that dies between its
 notices and its upload ends the run (spec A10: R1 keeps the processed chunks only in the
 worker's memory; master/partial_session.py).

The baseline "original GC" of spec §1.7 with l = 1 is the testbed's existing single-level plan
(BlockPlan with x = L e_s, s = delta - 1): one coded message after all delta chunks.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import numpy as np

from ..model.streams import ROOT_COMBINER, generator
from .assignment import Assignment, check_ordering
from .coding import Coefficients, block_length, chunk_coefficients, default_combiner, estimated_nmse


class Outcome(enum.Enum):
    USED = "used"
    LATE = "late"  # after STOP (R1) or after the chunk / gradient was complete
    DUPLICATE = "duplicate"
    REJECTED = "rejected"  # unknown worker or chunk, out of order, not expected, wrong shape


class _Progress:
    """Shared bookkeeping: in-order completion notices -> c_j, S_i, kappa_i."""

    def __init__(self, assignment: Assignment, ordering: Sequence[Sequence[int]], parts: int):
        if not 1 <= parts:
            raise ValueError(f"l must be >= 1, got {parts}")
        self.assignment = assignment
        self.ordering = check_ordering(assignment, ordering)
        self.parts = parts
        self.progress = np.zeros(assignment.n_workers, dtype=int)  # c_j
        self.processed_by: list[list[int]] = [[] for _ in range(assignment.n_chunks)]  # S_i

    def record(self, worker: int, chunk: int) -> Outcome:
        if not 0 <= worker < self.assignment.n_workers:
            return Outcome.REJECTED
        order, done = self.ordering[worker], int(self.progress[worker])
        if chunk in order[:done]:
            return Outcome.DUPLICATE
        if done >= len(order) or order[done] != chunk:
            return Outcome.REJECTED
        self.progress[worker] += 1
        self.processed_by[chunk].append(worker)
        return Outcome.USED

    @property
    def counts(self) -> np.ndarray:
        """kappa_i, shape (m,)."""
        return np.array([len(s) for s in self.processed_by])


class R1Decoder:
    """Variant R1 (spec §1.2, the recommended interpretation A1): notices, STOP, one upload each.

    Phases: `notice` (compute phase) -> `stop` (returns the COMBINE messages) -> `offer` (uploads)
    -> `gradient`. Phi (l x N) is `combiner` if given; else all ones for l = 1 and, for l >= 2,
    the best of `candidates` seeded Gaussian draws by min_i sigma_min(Phi[:, S_i]), chosen at stop
    time (only the PS uses Phi, spec §1.5). `worst_condition` = max_i cond(Phi[:, S_i]) is logged.
    """

    def __init__(
        self,
        assignment: Assignment,
        ordering: Sequence[Sequence[int]],
        dimension: int,
        parts: int = 1,
        combiner: np.ndarray | None = None,
        seed: int = 0,
        candidates: int = 4,
        selection: str = "pinv",
    ) -> None:
        self.assignment, self.dimension, self.parts = assignment, dimension, parts
        self.ordering = check_ordering(assignment, ordering)
        if combiner is not None and np.shape(combiner) != (parts, assignment.n_workers):
            raise ValueError(f"combiner must have shape ({parts}, {assignment.n_workers})")
        self.fixed_combiner = None if combiner is None else np.asarray(combiner, dtype=float)
        self.rng = generator(seed, ROOT_COMBINER)
        self.candidates, self.selection = max(1, candidates), selection
        self.reset()

    def reset(self) -> None:
        """Forget everything: start a new iteration."""
        self._state = _Progress(self.assignment, self.ordering, self.parts)
        self.stopped = False
        self.combiner: np.ndarray | None = self.fixed_combiner
        self.coefficients: dict[int, Coefficients] = {}
        self.coefficient_blocks: dict[int, np.ndarray] = {}  # chunk -> B_i (kappa_i x l)
        self.uploads: dict[int, np.ndarray] = {}
        self.worst_condition = math.nan
        self._sum = np.zeros((self.parts, block_length(self.dimension, self.parts)))

    # -- compute phase --------------------------------------------------------------------------
    def notice(self, worker: int, chunk: int) -> Outcome:
        """Worker `worker` finished `chunk` (must be the next chunk of its order)."""
        if self.stopped:
            return Outcome.LATE
        return self._state.record(worker, chunk)

    @property
    def progress(self) -> np.ndarray:
        """c_j: chunks each worker has reported, shape (N,)."""
        return self._state.progress.copy()

    @property
    def counts(self) -> np.ndarray:
        """kappa_i: distinct workers that have processed chunk i, shape (m,)."""
        return self._state.counts

    @property
    def processed_by(self) -> list[list[int]]:
        """S_i: the workers that processed chunk i, in notice order."""
        return [list(s) for s in self._state.processed_by]

    @property
    def exact_ready(self) -> bool:
        """Every chunk has >= l processed copies: stopping now decodes exactly (spec §1.3)."""
        return bool(self.counts.min() >= self.parts)

    @property
    def estimated_nmse(self) -> float:
        """The NMSE of stopping now, from the counts alone (spec §1.4); 0 when exact_ready."""
        return estimated_nmse(self.counts, self.parts)

    # -- stop -----------------------------------------------------------------------------------
    def _choose_combiner(self) -> np.ndarray:
        n = self.assignment.n_workers
        if self.parts == 1:  # all ones: nothing to choose (and no SVD to score it)
            return default_combiner(n, 1, self.rng)
        sets = [s for s in self._state.processed_by if s]
        best, best_score = None, -math.inf
        for _ in range(1 if self.parts == 1 else self.candidates):
            phi = default_combiner(n, self.parts, self.rng)
            score = min((np.linalg.svd(phi[:, s], compute_uv=False)[-1] for s in sets), default=1)
            if score > best_score:
                best, best_score = phi, score
        return best

    def stop(self) -> dict[int, Coefficients]:
        """Freeze S_i and return the COMBINE message of every worker that must upload.

        Workers absent from the result upload nothing (no chunk, or only zero coefficients).
        """
        if not self.stopped:
            self.stopped = True
            if self.combiner is None:
                self.combiner = self._choose_combiner()
            per_worker: dict[int, list[tuple[int, np.ndarray]]] = {}
            conds = [1.0]
            for chunk, workers in enumerate(self._state.processed_by):
                if not workers:
                    continue
                b = chunk_coefficients(self.combiner, workers, self.selection)
                self.coefficient_blocks[chunk] = b
                if self.parts > 1:  # a non-zero 1 x kappa matrix has condition number 1
                    conds.append(float(np.linalg.cond(self.combiner[:, workers])))
                for row, worker in zip(b, workers, strict=True):
                    if row.any():
                        per_worker.setdefault(worker, []).append((chunk, row))
            self.worst_condition = max(conds)
            self.coefficients = {
                w: Coefficients(w, tuple(c for c, _ in items), np.array([r for _, r in items]))
                for w, items in sorted(per_worker.items())
            }
        return self.coefficients

    # -- upload phase ---------------------------------------------------------------------------
    def offer(self, worker: int, values: np.ndarray) -> Outcome:
        """Take the UPLOAD z_j; adds Phi[:, j] z_j to the decoded blocks (spec §1.2 step 6)."""
        if not self.stopped or worker not in self.coefficients:
            return Outcome.REJECTED
        values = np.asarray(values)
        if values.shape != (self._sum.shape[1],):
            return Outcome.REJECTED
        if worker in self.uploads:
            return Outcome.DUPLICATE
        self.uploads[worker] = values
        self._sum += np.outer(self.combiner[:, worker], values)
        return Outcome.USED

    @property
    def complete(self) -> bool:
        """Every worker that was sent coefficients has uploaded."""
        return self.stopped and len(self.uploads) == len(self.coefficients)

    def gradient(self) -> np.ndarray:
        """g_hat (d,): exact when stopped with exact_ready and complete, else the LS estimate."""
        return self._sum.ravel()[: self.dimension].copy()
