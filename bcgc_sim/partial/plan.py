"""The partial-straggler protocol as a testbed plan: schemes `partial-gc` and `partial-gc-approx`.

Reconstruction of spec/partial-gc.md (the paper's body was not available, spec §0), variant R1
(spec §1.2, A1): workers process their chunks in a fixed order and send a payload-free NOTICE
after each; the master stops when every chunk has l processed copies (exact) or at a deadline
(approximate), sends COMBINE (beta) to the workers whose copies it uses, ABANDON to the others,
and adds the one UPLOAD each chosen worker sends back. The master's state machine:
`bcgc_sim.partial.decoder`; timing model: `bcgc_sim.partial.timing`.

Mapping onto the testbed (spec §5.3, the fair comparison):
  * chunk i = data partition i (problems.partition_bounds(M, N)): m = N chunks, cyclic storage of
    `storage` = delta partitions per worker, worker j holding j, j+1, ..., j+delta-1 (mod N);
  * same unit of work: one chunk is one partition's full L-coordinate gradient, raw load L (a
    BCGC worker's level-0 slot over all L coordinates costs the same), so worker j's k-th chunk
    is due at t_start + time_scale * (M C / N) * T_j * k L, and the raw runtime R is in the same
    units as a BlockPlan's: tau = (M C / N) R;
  * same upload: l = 1 (the default) uploads L floats per worker, as BCGC and Tandon do; l > 1
    uploads ceil(L / l);
  * same stragglers: T from the seeded streams keyed by (seed, iteration, worker).

Defaults (config section `partial`, documented in the README):
  * storage 0 = "the storage BCGC gets": 1 + the highest redundancy level of bcgc-opt for the same
    model (fitted on the base law under a failure mixture), so partial-gc never stores more data
    than the BCGC plan it is compared with. Under the shipped laws this is N (full replication,
    BCGC's published setting, spec §5.1); set partial.storage = delta for a storage-limited
    comparison (spec §5.3.1: BCGC capped at delta - 1 levels, Tandon s = delta - 1);
  * ordering "optimal" = the Latin ordering (spec §2.2, A4; for cyclic storage it is the natural
    order); "random" = one uniformly random order per worker, drawn once per run from the seed;
  * approximate stop rule: at the fixed deadline approx_time x E[time to the exact gradient]
    (E by Monte Carlo on the tuning stream; a deadline T as in the paper's MSE-against-T plots,
    no knowledge of this iteration's T), or earlier once the estimated NMSE (spec §1.4) is at
    most approx_nmse, and never later than the exact gradient.

The model has no COMBINE / UPLOAD round trip; the testbed measures it and reports it separately.
completion_probability is a Monte-Carlo estimate (20000 draws of the evaluation stream, cached
per law); no exact E[tau] is offered (exact_expected_raw_runtime returns None).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError
from ..model.stragglers import CycleTimeDistribution, monte_carlo_cycle_times
from ..model.streams import ROOT_ORDERING, STREAM_EVALUATION, STREAM_TUNING, generator
from ..model.system import SystemModel
from .assignment import Assignment, Ordering, positions, random_ordering
from .coding import block_length
from .timing import copy_times, speed_finish_times

ORDERINGS = ("optimal", "random")
CDF_SAMPLES = 20_000  # Monte-Carlo draws behind completion_probability


@dataclass(frozen=True)
class PartialOptions:
    """Knobs of partial-gc and partial-gc-approx (config section `partial`)."""

    storage: int = 0  # delta partitions per worker, cyclic; 0 = the storage bcgc-opt uses
    parts: int = 1  # l: the gradient is cut into l blocks, every upload has ceil(L / l) floats
    ordering: str = "optimal"  # "optimal" (Latin) or "random" (drawn once from the seed)
    approx_time: float = 0.8  # partial-gc-approx stops at this fraction of E[exact time] ...
    approx_nmse: float = 0.0  # ... or once the estimated NMSE is at most this (0 = off)

    def __post_init__(self) -> None:
        """The checks that need no model; a UserError names the config key."""
        if self.storage < 0:
            raise UserError(f"partial.storage must be >= 0 (0 = as bcgc-opt), got {self.storage}")
        if self.parts < 1:
            raise UserError(f"partial.parts (l) must be >= 1, got {self.parts}")
        if self.ordering not in ORDERINGS:
            raise UserError(
                f"partial.ordering must be 'optimal' or 'random', got '{self.ordering}'"
            )
        if not (self.approx_time > 0 and math.isfinite(self.approx_time)):
            raise UserError(f"partial.approx_time must be > 0 (a fraction), got {self.approx_time}")
        if not 0 <= self.approx_nmse < 1:
            raise UserError(f"partial.approx_nmse must be in [0, 1), got {self.approx_nmse}")

    def check(self, n_workers: int) -> None:
        """The checks against N workers, before storage 0 is resolved (config time)."""
        if self.storage > n_workers:
            raise UserError(
                f"partial.storage must be in 0..{n_workers} (cluster.workers; 0 = as "
                f"bcgc-opt), got {self.storage}"
            )
        if self.storage:
            check_delta(self.storage, self.parts, n_workers)


def check_delta(storage: int, parts: int, n_workers: int) -> None:
    """delta = `storage` partitions per worker in 1..N, and l = `parts` at most delta."""
    if not 1 <= storage <= n_workers:
        raise UserError(
            f"partial.storage (delta) must be in 1..{n_workers} (cluster.workers), got {storage}"
        )
    if not 1 <= parts <= storage:
        raise UserError(
            f"partial.parts (l) must be in 1..{storage} (partial.storage = delta): every chunk "
            f"needs l processed copies; got {parts}"
        )


@dataclass(frozen=True)
class PartialPlan:
    """Partial-straggler GC, variant R1, on cyclic storage; times in raw units (like BlockPlan).

    `deadline` (raw units) and `nmse_target` make it approximate; both unset = exact.
    """

    scheme: str
    n_workers: int
    coordinates: int  # L; one chunk costs raw load L
    storage: int  # delta, partitions per worker
    parts: int  # l
    ordering_name: str  # "optimal" or "random"
    ordering: Ordering  # ordering[j] = the chunks of worker j in processing order
    seed: int = 1
    deadline: float | None = None  # approximate: stop at this raw time at the latest
    nmse_target: float = 0.0  # approximate: stop once the estimated NMSE is at most this
    approx_time: float | None = None  # the fraction of E[exact time] behind `deadline`
    _cache: dict = field(default_factory=dict, init=False, compare=False, repr=False, hash=False)

    # -- structure ------------------------------------------------------------------------------
    @property
    def approximate(self) -> bool:
        return self.deadline is not None or self.nmse_target > 0

    @property
    def assignment(self) -> Assignment:
        if "assignment" not in self._cache:
            self._cache["assignment"] = Assignment.cyclic(self.n_workers, self.storage)
        return self._cache["assignment"]

    @property
    def positions(self) -> np.ndarray:
        """pos_j(i), shape (m, N), 1-based; 0 where worker j does not store chunk i."""
        if "positions" not in self._cache:
            self._cache["positions"] = positions(self.assignment, self.ordering)
        return self._cache["positions"]

    @property
    def chunk_load(self) -> float:
        """Raw load of one chunk (one partition's full gradient): L."""
        return float(self.coordinates)

    @property
    def upload_length(self) -> int:
        """Floats in every UPLOAD: ceil(L / l)."""
        return block_length(self.coordinates, self.parts)

    # -- timing model ---------------------------------------------------------------------------
    def copy_times(self, cycle_times: np.ndarray) -> np.ndarray:
        """Raw time at which worker j has processed chunk i, shape (K, m, N); inf if not held."""
        t = np.atleast_2d(np.asarray(cycle_times, dtype=float))
        finish = speed_finish_times(t, self.assignment.loads, self.chunk_load)
        return copy_times(self.assignment, self.positions, finish)

    def useful_times(self, cycle_times: np.ndarray) -> np.ndarray:
        """The times at which the estimated NMSE drops, sorted, shape (K, m l).

        Chunk i's first l copies each remove 1/(m l) of the NMSE (spec §1.4); later ones do not.
        """
        copies = np.sort(self.copy_times(cycle_times), axis=2)[:, :, : self.parts]
        return np.sort(copies.reshape(copies.shape[0], -1), axis=1)

    def raw_runtime(self, cycle_times: np.ndarray) -> np.ndarray:
        """R per realisation, shape (K,): the master's stop time (no round trip; see module doc).

        Exact: the time every chunk has l copies (timing.exact_times). Approximate:
        min(deadline, first time the estimated NMSE <= nmse_target, exact time).
        """
        useful = self.useful_times(cycle_times)
        total = useful.shape[1]
        needed = max(0, math.ceil(total * (1.0 - self.nmse_target) - 1e-9))
        stop = useful[:, needed - 1] if needed > 0 else np.zeros(useful.shape[0])
        if self.deadline is not None:
            stop = np.minimum(stop, self.deadline)
        return stop

    def nmse_at_stop(self, cycle_times: np.ndarray) -> np.ndarray:
        """Estimated NMSE sum_i (l - kappa_i)^+ / (m l) at the predicted stop, shape (K,)."""
        useful = self.useful_times(cycle_times)
        stop = self.raw_runtime(cycle_times)
        return (useful > stop[:, None]).sum(axis=1) / useful.shape[1]

    def completion_probability(self, raw_deadline: float, dist: CycleTimeDistribution) -> float:
        """P(R <= raw_deadline), Monte Carlo on CDF_SAMPLES draws of the evaluation stream."""
        key = ("cdf", repr(dist))
        if key not in self._cache:
            t = monte_carlo_cycle_times(
                dist, self.seed, CDF_SAMPLES, self.n_workers, STREAM_EVALUATION
            )
            self._cache[key] = np.sort(self.raw_runtime(t))
        values = self._cache[key]
        return float(np.searchsorted(values, raw_deadline, side="right") / values.size)

    def exact_expected_raw_runtime(self, dist: CycleTimeDistribution) -> float | None:
        """None: there is no exact expectation for this plan (predict shows the Monte Carlo one)."""
        return None

    def describe(self) -> str:
        order = "Latin ordering" if self.ordering_name == "optimal" else "random ordering"
        text = (
            f"cyclic storage delta = {self.storage}, l = {self.parts}, {order}, R1 "
            f"(upload {self.upload_length} floats)"
        )
        if not self.approximate:
            return text + ", exact"
        rules = []
        if self.deadline is not None:
            rules.append(f"at {self.approx_time:g} x E[exact] = R {self.deadline:.5g}")
        if self.nmse_target > 0:
            rules.append(f"at estimated NMSE <= {self.nmse_target:g}")
        return text + ", approximate: stop " + " or ".join(rules)

    # -- run.json -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "kind": "partial",
            "scheme": self.scheme,
            "n_workers": self.n_workers,
            "coordinates": self.coordinates,
            "storage": self.storage,
            "parts": self.parts,
            "ordering_name": self.ordering_name,
            "ordering": [list(o) for o in self.ordering],
            "seed": self.seed,
            "deadline": self.deadline,
            "nmse_target": self.nmse_target,
            "approx_time": self.approx_time,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PartialPlan:
        deadline, fraction = data.get("deadline"), data.get("approx_time")
        return cls(
            str(data["scheme"]),
            int(data["n_workers"]),
            int(data["coordinates"]),
            int(data["storage"]),
            int(data["parts"]),
            str(data["ordering_name"]),
            tuple(tuple(int(i) for i in o) for o in data["ordering"]),
            int(data.get("seed", 1)),
            None if deadline is None else float(deadline),
            float(data.get("nmse_target", 0.0)),
            None if fraction is None else float(fraction),
        )


def build_partial(
    model: SystemModel,
    opts: PartialOptions,
    storage: int,
    seed: int,
    tuning_samples: int,
    approximate: bool,
) -> PartialPlan:
    """The plan of `partial-gc` (exact) or `partial-gc-approx` with `storage` = delta partitions
    per worker (the registry resolves opts.storage = 0); `tuning_samples` draws of the tuning
    stream set the approximate plan's deadline."""
    n = model.n_workers
    check_delta(storage, opts.parts, n)
    assignment = Assignment.cyclic(n, storage)
    if opts.ordering == "optimal":
        ordering = assignment.natural  # cyclic natural order = a Latin ordering (spec §2.2)
    else:
        ordering = random_ordering(assignment, generator(seed, ROOT_ORDERING, n, storage))
    plan = PartialPlan(
        "partial-gc",
        n,
        model.coordinates,
        storage,
        opts.parts,
        opts.ordering,
        ordering,
        seed,
    )
    if not approximate:
        return plan
    t = monte_carlo_cycle_times(model.distribution, seed, tuning_samples, n, STREAM_TUNING)
    exact = plan.raw_runtime(t)
    exact = exact[np.isfinite(exact)]
    if exact.size == 0:
        raise UserError(
            "partial-gc-approx: the exact gradient is never reached under this law, so its "
            "deadline (partial.approx_time x E[exact time]) is undefined"
        )
    return dataclasses.replace(
        plan,
        scheme="partial-gc-approx",
        deadline=float(opts.approx_time * exact.mean()),
        nmse_target=float(opts.approx_nmse),
        approx_time=float(opts.approx_time),
    )
