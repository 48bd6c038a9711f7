"""Step timings and the running status file (what `crysgen evaluate` writes as it goes)."""

from __future__ import annotations

import json
import time

import pytest

from crysgen.evaluation.timing import COMPLETE, FAILED, RUNNING, StepTimer, timed


def test_steps_are_timed_nested_added_up_and_written_as_they_start_and_end(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    timer = StepTimer(path)
    seen = []
    with timed(timer, "stability"):
        with timed(timer, "stability.relax"):
            seen.append(json.loads(path.read_text()))
            time.sleep(0.02)
        with timed(timer, "stability.relax"):  # a second part of the same step adds up
            time.sleep(0.02)
        seen.append(json.loads(path.read_text()))
    final = json.loads(path.read_text())
    assert seen[0]["status"] == RUNNING and seen[0]["running"] == ["stability", "stability.relax"]
    assert seen[0]["seconds"] == {} and set(seen[0]["running_for_s"]) == {"stability", "stability.relax"}
    assert seen[1]["running"] == ["stability"] and seen[1]["seconds"]["stability.relax"] >= 0.04
    assert final["running"] == [] and final["seconds"]["stability"] >= final["seconds"]["stability.relax"]
    assert final["elapsed_s"] >= final["seconds"]["stability"]


def test_a_failure_is_recorded_and_the_error_still_raised(tmp_path):
    path = tmp_path / "metrics.json"
    timer = StepTimer(path)
    with timed(timer, "basics"):
        pass
    with pytest.raises(RuntimeError), timed(timer, "coverage"):
        raise RuntimeError("boom")
    assert "coverage" not in timer.seconds and timer.running == ["coverage"]  # where it stopped
    timer.write(FAILED, "RuntimeError: boom")
    saved = json.loads(path.read_text())
    assert saved["error"] == "RuntimeError: boom" and saved["running"] == ["coverage"]
    assert saved["running_for_s"]["coverage"] >= 0 and "basics" in saved["seconds"]
    assert timer.status(COMPLETE)["status"] == COMPLETE


def test_without_a_file_or_with_an_unwritable_one_nothing_stops(tmp_path):
    with timed(None, "anything"):
        pass
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    timer = StepTimer(blocker / "metrics.json")  # below a file: cannot be written
    with timed(timer, "basics"):
        pass
    assert "basics" in timer.rounded()
