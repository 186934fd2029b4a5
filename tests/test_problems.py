"""Data sets on disk: memory maps that are reused, refreshed when a file changes, and exact."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from bcgc_sim import problems
from bcgc_sim.problems import (
    ProblemData,
    full_gradient,
    loss_at,
    prepare_data,
    relative_error,
    step_size,
)
from bcgc_sim.wire import framing


@pytest.fixture
def data(tmp_path) -> ProblemData:
    return prepare_data("least-squares", "synthetic", 12, 5, 0.1, 3, tmp_path)


def test_maps_are_reused_and_read_only(data):
    (x1, y1), (x2, y2) = data.load(), data.load()
    assert x1 is x2 and y1 is y2  # the master reads them every iteration: mapped once
    assert x1.shape == (12, 5) and y1.shape == (12,)
    assert not x1.flags.writeable


def test_a_rewritten_file_is_mapped_anew(data, tmp_path):
    x, _ = data.load()
    replacement = np.arange(60.0).reshape(12, 5)
    path = tmp_path / "replacement.npy"
    np.save(path, replacement)
    path.replace(data.features)  # a new file at the same path
    fresh, _ = data.load()
    assert fresh is not x
    np.testing.assert_array_equal(fresh, replacement)


def test_full_gradient_is_the_sum_over_rows(data):
    x, y = (np.array(a) for a in data.load())
    theta = np.linspace(-1, 1, 5)
    gradient, loss = full_gradient(data, theta)
    np.testing.assert_allclose(gradient, x.T @ (x @ theta - y), rtol=1e-12)
    assert loss == pytest.approx(0.5 * np.sum((x @ theta - y) ** 2), rel=1e-12)
    assert loss_at(data, theta) == loss


def test_relative_error_scales_by_the_largest_true_entry():
    assert relative_error(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == 0.25
    assert relative_error(np.array([0.5, 0.0]), np.zeros(2)) == 0.5  # zero gradient: absolute


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_processes_keep_freed_memory_on_glibc():
    assert framing.keep_freed_memory()


@pytest.mark.parametrize("kind, rows, coordinates", [("least-squares", 30, 7), ("logistic", 6, 50)])
def test_synthetic_data_written_in_chunks_equal_one_draw(
    tmp_path, monkeypatch, kind, rows, coordinates
):
    monkeypatch.setattr(problems, "CHUNK_BYTES", 8 * 2 * coordinates + 8)  # two rows a chunk
    data = prepare_data(kind, "synthetic", rows, coordinates, 0.1, 3, tmp_path)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((rows, coordinates))
    z = x @ (rng.standard_normal(coordinates) / np.sqrt(coordinates))
    z += 0.1 * rng.standard_normal(rows)
    written_x, written_y = data.load()
    np.testing.assert_array_equal(written_x, x)
    np.testing.assert_allclose(written_y, z if kind == "least-squares" else np.sign(z), rtol=1e-12)
    assert sorted(p.name for p in tmp_path.rglob("*.npy")) == ["X.npy", "y.npy"]


@pytest.mark.parametrize("rows, coordinates", [(40, 12), (5, 60)])
def test_step_size_is_one_over_the_largest_eigenvalue(tmp_path, monkeypatch, rows, coordinates):
    monkeypatch.setattr(problems, "CHUNK_BYTES", 8 * 3 * max(rows, coordinates))  # a few slices
    data = prepare_data("least-squares", "synthetic", rows, coordinates, 0.1, 3, tmp_path)
    x, _ = data.load()
    exact = 1.0 / np.linalg.eigvalsh(x.T @ x / rows)[-1]
    assert step_size(data) == pytest.approx(exact, rel=1e-12)  # from the Gram matrix
    monkeypatch.setattr(problems, "GRAM_SIDE", 1)  # power iteration: close, never above 2/lambda
    assert step_size(data, iterations=200) == pytest.approx(exact, rel=1e-3)
