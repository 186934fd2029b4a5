"""Learning problems and data sets: f(theta) = sum over samples of loss(x_i . theta, y_i).

Both problems have gradient X^T r(X theta, y), where r is the derivative of the per-sample loss
with respect to z = x . theta. A worker computes the partial derivatives of coordinates
[a, b) over rows [lo, hi) as X[lo:hi, a:b]^T r, so its cost is (rows) x (b - a), as in the
runtime model (spec §3).

Data live once on disk as .npy files (features X, shape (M, L), float64; targets y, shape (M,))
and are memory-mapped by the master and every worker: the page cache holds one copy.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

PROBLEMS = ("least-squares", "logistic")
DATASETS = ("synthetic", "breast-cancer", "diabetes")
BUNDLED_SHAPES = {"breast-cancer": (569, 30), "diabetes": (442, 10)}  # (M, L)
MEMORY_FRACTION = 0.8  # of the memory available now that one step of a command may plan to use
CHUNK_BYTES = 32 << 20  # rows of a synthetic X drawn and written at a time
GRAM_SIDE = 512  # lambda_max from the Gram matrix when the smaller side of X is at most this


@dataclass(frozen=True)
class MemoryNeed:
    """Memory that one part of a command will allocate, and what makes it smaller."""

    what: str  # e.g. "the data set (800 x 4000000 float64 values)"
    nbytes: int
    fix: str  # e.g. "lower model.samples or model.coordinates"


def size_text(nbytes: float) -> str:
    """A size in bytes as text: '23.8 GiB', '640.0 KiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"


def check_memory(needs: list[MemoryNeed], step: str) -> None:
    """Refuse (UserError), before anything is allocated, a `step` whose needs add up to more
    than MEMORY_FRACTION of the memory available now; the message names the largest need and
    its fix."""
    import psutil  # here, not at the top: worker processes import this module and start faster

    total = sum(need.nbytes for need in needs)
    available = psutil.virtual_memory().available
    if not needs or total <= MEMORY_FRACTION * available:
        return
    top = max(needs, key=lambda need: need.nbytes)
    need, free = size_text(total), size_text(available)
    if len(needs) == 1:
        raise UserError(
            f"{step} needs about {need} of memory for {top.what} but {free} is available: {top.fix}"
        )
    raise UserError(
        f"{step} needs about {need} of memory but {free} is available; the largest part is "
        f"{top.what} ({size_text(top.nbytes)}): {top.fix}"
    )


def data_shape(dataset: str, rows: int, coordinates: int) -> tuple[int, int]:
    """(M, L) of a data set: those asked for (synthetic), or the bundled set's own."""
    return BUNDLED_SHAPES.get(dataset, (rows, coordinates))


def generation_need(dataset: str, rows: int, coordinates: int) -> MemoryNeed:
    """Memory to generate a data set before it is saved: X (rows x coordinates float64) and
    y; the bundled sets are small."""
    if dataset != "synthetic":
        return MemoryNeed(f"the {dataset} data set", 1 << 20, "")
    return MemoryNeed(
        f"the synthetic data set (model.samples x model.coordinates = {rows} x {coordinates} "
        "float64 values)",
        8 * rows * (coordinates + 2),
        "lower model.samples or model.coordinates",
    )


@dataclass(frozen=True)
class ProblemData:
    """Where the data of one learning problem are, and their shape (rows M, coordinates L)."""

    kind: str
    features: str  # path of X.npy
    targets: str  # path of y.npy
    rows: int
    coordinates: int

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped (X, y); nothing is copied. Plain ndarray views of the maps: slicing a
        np.memmap costs tens of microseconds, slicing an ndarray does not."""
        return _mapped(self.features, _version(self.features)), _mapped(
            self.targets, _version(self.targets)
        )

    def to_header(self) -> dict:
        return asdict(self)


def _version(path: str) -> tuple[int, int, int]:
    """(inode, size, mtime): a file rewritten at the same path is mapped anew."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _mapped(path: str, version: tuple[int, int, int]) -> np.ndarray:
    """The read-only map of one .npy file, kept open: the master reads it every iteration."""
    return np.asarray(np.load(path, mmap_mode="r"))


def loss_derivative(kind: str, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """r_i = d loss(z_i, y_i) / d z_i, shape (rows,)."""
    if kind == "least-squares":  # loss = (z - y)^2 / 2
        return z - y
    # logistic, y in {-1, +1}: loss = log(1 + exp(-y z)), derivative -y sigmoid(-y z)
    return -y * _sigmoid(-y * z)


def total_loss(kind: str, z: np.ndarray, y: np.ndarray) -> float:
    """sum_i loss(z_i, y_i)."""
    if kind == "least-squares":
        return float(0.5 * np.sum((z - y) ** 2))
    return float(np.sum(np.logaddexp(0.0, -y * z)))


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * v))


def full_gradient(data: ProblemData, theta: np.ndarray) -> tuple[np.ndarray, float]:
    """The uncoded gradient sum_i grad loss_i, shape (L,), and the loss sum_i loss_i."""
    x, y = data.load()
    z = x @ theta
    return x.T @ loss_derivative(data.kind, z, y), total_loss(data.kind, z, y)


def loss_at(data: ProblemData, theta: np.ndarray) -> float:
    """The loss sum_i loss_i alone: half the work of full_gradient."""
    x, y = data.load()
    return total_loss(data.kind, x @ theta, y)


def relative_error(gradient: np.ndarray, true_gradient: np.ndarray) -> float:
    """max |g - g_true| / max |g_true| (plain max |g - g_true| when g_true = 0)."""
    scale = float(np.max(np.abs(true_gradient))) or 1.0
    return float(np.max(np.abs(gradient - true_gradient))) / scale


def step_size(data: ProblemData, iterations: int = 50) -> float:
    """A safe step for theta <- theta - step * gradient / M: 1/lambda_max (x4 for logistic),
    lambda_max of X^T X / M. Exact when the smaller side of X (M or L) is at most GRAM_SIDE:
    the largest eigenvalue of the Gram matrix of that side (X X^T or X^T X, the same nonzero
    spectrum), built in one pass over X; else `iterations` power iterations (two passes each)."""
    x, _ = data.load()
    if min(x.shape) <= GRAM_SIDE:
        value = float(np.linalg.eigvalsh(_gram(x))[-1]) / data.rows
        return (4.0 if data.kind == "logistic" else 1.0) / value if value > 0 else 1.0
    v = np.ones(data.coordinates) / np.sqrt(data.coordinates)
    value = 1.0
    for _ in range(iterations):
        w = x.T @ (x @ v) / data.rows
        value = float(np.linalg.norm(w))
        if value == 0:
            return 1.0
        v = w / value
    return (4.0 if data.kind == "logistic" else 1.0) / value


def _gram(x: np.ndarray) -> np.ndarray:
    """X X^T (M x M) if M <= L, else X^T X (L x L), summed over slices of about CHUNK_BYTES of
    X: a memory-mapped X is read once, never copied whole."""
    rows, coordinates = x.shape
    if rows <= coordinates:
        step = max(1, CHUNK_BYTES // (8 * rows))
        gram = np.zeros((rows, rows))
        for a in range(0, coordinates, step):
            part = x[:, a : a + step]
            gram += part @ part.T
        return gram
    step = max(1, CHUNK_BYTES // (8 * coordinates))
    gram = np.zeros((coordinates, coordinates))
    for a in range(0, rows, step):
        part = x[a : a + step]
        gram += part.T @ part
    return gram


def prepare_data(
    kind: str,
    dataset: str,
    rows: int,
    coordinates: int,
    noise: float,
    seed: int,
    folder: str | Path,
) -> ProblemData:
    """Write the data set once under `folder` (reused when it exists) and describe it.

    `synthetic` draws X ~ N(0, 1) of shape (rows, coordinates) and a planted theta*; the two
    bundled scikit-learn sets fix rows and coordinates themselves (BUNDLED_SHAPES), with
    standardised features. Generating is refused when memory is short (check_memory); a
    failed save leaves no file behind (UserError).
    """
    if kind not in PROBLEMS:
        raise UserError(f"problem.kind must be one of {', '.join(PROBLEMS)}, got '{kind}'")
    if dataset not in DATASETS:
        raise UserError(f"problem.dataset must be one of {', '.join(DATASETS)}, got '{dataset}'")
    where = data_folder(kind, dataset, rows, coordinates, noise, seed, folder)
    features, targets = where / "X.npy", where / "y.npy"
    if not (features.exists() and targets.exists()):
        check_memory([generation_need(dataset, rows, coordinates)], "generating the data set")
        rows, coordinates = data_shape(dataset, rows, coordinates)
        try:
            where.mkdir(parents=True, exist_ok=True)
            if dataset == "synthetic":
                _write_synthetic(features, targets, kind, rows, coordinates, noise, seed)
            else:
                x, y = _load_bundled(kind, dataset)
                _save_atomically(features, x)
                _save_atomically(targets, y)
        except OSError as exc:
            with contextlib.suppress(OSError):
                where.rmdir()  # if empty
            needs = f"it needs {size_text(8 * rows * (coordinates + 1))}"
            if exc.errno in (None, errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # None: numpy's
                needs += f", {_free_space(where)} (free space, or set problem.data_dir)"
            else:
                needs += " (set problem.data_dir to a folder you can write)"
            raise UserError(
                f"cannot write the data set to {where}: {exc.strerror or exc}; {needs}"
            ) from None
    try:
        x = np.load(features, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot read the data set {features}: {exc}; remove its folder to have it made again"
        ) from None
    return ProblemData(
        kind, str(features.resolve()), str(targets.resolve()), x.shape[0], x.shape[1]
    )


def _free_space(folder: Path) -> str:
    import shutil

    for place in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            return f"{size_text(shutil.disk_usage(place).free)} is free there"
    return "the free space is unknown"


def data_folder(
    kind: str, dataset: str, rows: int, coordinates: int, noise: float, seed: int, folder
) -> Path:
    """Where prepare_data keeps this data set: one subfolder of `folder` per generating spec."""
    spec = {"kind": kind, "dataset": dataset, "seed": seed, "noise": noise}
    if dataset == "synthetic":
        spec.update(rows=rows, coordinates=coordinates)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return Path(folder) / f"{dataset}-{kind}-{key}"


def _write_synthetic(
    features: Path, targets: Path, kind: str, rows: int, coordinates: int, noise: float, seed: int
) -> None:
    """X ~ N(0, 1) of shape (rows, coordinates), drawn and written CHUNK_BYTES of rows at a
    time (the whole X is never in memory, and never copied), then a planted theta* and y.

    One generator draws X row after row, then theta*, then the noise: the values are those
    of one draw of the whole X (numpy fills arrays in C order from one stream)."""
    rng = np.random.default_rng(seed)
    step = max(1, CHUNK_BYTES // (8 * coordinates))
    chunk = np.empty((min(step, rows), coordinates))
    with _atomic(features) as tmp, open(tmp, "wb") as out:
        np.lib.format.write_array_header_1_0(
            out, {"descr": "<f8", "fortran_order": False, "shape": (rows, coordinates)}
        )
        for a in range(0, rows, step):
            part = chunk[: min(step, rows - a)]
            rng.standard_normal(out=part)
            out.write(part.data)
    planted = rng.standard_normal(coordinates) / np.sqrt(coordinates)
    x = np.load(features, mmap_mode="r")
    z = np.concatenate([x[a : a + step] @ planted for a in range(0, rows, step)])
    del x
    z += noise * rng.standard_normal(rows)
    _save_atomically(targets, z if kind == "least-squares" else np.where(z >= 0, 1.0, -1.0))


def _load_bundled(kind: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """A scikit-learn data set with standardised features (and labels +-1 for logistic)."""
    from sklearn import datasets  # bundled with scikit-learn: no download

    loaded = (
        datasets.load_breast_cancer() if dataset == "breast-cancer" else datasets.load_diabetes()
    )
    x = np.asarray(loaded.data, dtype=float)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    target = np.asarray(loaded.target, dtype=float)
    if kind == "logistic":
        labels = np.unique(target)
        y = (
            np.where(target == labels[-1], 1.0, -1.0)
            if labels.size == 2
            else np.where(target > np.median(target), 1.0, -1.0)
        )
    else:
        y = (target - target.mean()) / target.std()
    return x, y


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path to write, renamed to `path` when the block ends without error: `path`
    is whole or absent; the temporary file is removed when writing fails or is interrupted."""
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_atomically(path: Path, array: np.ndarray) -> None:
    """np.save to `path`, atomically (_atomic)."""
    with _atomic(path) as tmp:
        np.save(tmp, np.ascontiguousarray(array, dtype=np.float64))
