"""Run records: rows are queued, reach the disk at least every WRITE_INTERVAL_S, and are all
written when a scheme ends (metadata) or the run closes."""

from __future__ import annotations

import csv

from bcgc_sim import results
from bcgc_sim.results import PartialRow, RunRecorder


def _rows(path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _row(iteration: int) -> dict:
    return {"scheme": "uncoded", "iteration": iteration, "measured_s": 0.5}


def test_rows_wait_for_the_write_interval(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(results.time, "monotonic", lambda: clock[0])
    recorder = RunRecorder(tmp_path)
    recorder.iterations.writerow(_row(0))
    recorder.flush_if_due()
    assert _rows(tmp_path / "iterations.csv") == []  # queued, not yet due
    clock[0] += results.WRITE_INTERVAL_S
    recorder.iterations.writerow(_row(1))
    recorder.flush_if_due()
    assert [r["iteration"] for r in _rows(tmp_path / "iterations.csv")] == ["0", "1"]
    recorder.close()


def test_metadata_and_close_write_every_queued_row(tmp_path):
    recorder = RunRecorder(tmp_path)
    recorder.iterations.writerow(_row(0))
    recorder.table("partial.csv", PartialRow).writerow({"scheme": "partial-gc", "iteration": 0})
    recorder.write_metadata({"status": "running"})  # a scheme ended: tables match run.json
    assert len(_rows(tmp_path / "iterations.csv")) == 1
    assert len(_rows(tmp_path / "partial.csv")) == 1
    recorder.messages.writerows([{"scheme": "uncoded", "iteration": 1}])
    recorder.close()
    assert len(_rows(tmp_path / "messages.csv")) == 1
