"""Where an evaluation's time goes: wall seconds per step, written to a status file as it runs.

`crysgen evaluate` times every metric family and the slow parts inside them (the relaxation,
each potential's reference energies and elemental terminals, the reference fingerprints). With a
``status_file`` the times so far, the step now running and the elapsed time are rewritten
(atomically) whenever a step starts or ends, so ``metrics.json`` of a run that is still going —
or was stopped — says where the time went, with or without progress bars; the finished report
replaces it with the full metrics (``"status": "complete"``).

Step names: a family (``"coverage"``) or ``family.part`` (``"stability.relax"``,
``"stability.hull_chgnet.reference_energies"``); a name timed twice adds up. A part computed in
the background while other families ran (``"coverage.reference_fingerprints_background"``) is
added when it is collected; its seconds overlap other steps' and are not in its family's.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crysgen.crystal_set import write_text_atomic

if TYPE_CHECKING:
    from collections.abc import Iterator

RUNNING = "running"
FAILED = "failed"
COMPLETE = "complete"
"""The ``status`` values of a status file / metrics.json."""


@dataclass
class StepTimer:
    """Wall seconds of named steps, in the order they started.

    Attributes:
        status_file: where the running status is written (None: nowhere).
        seconds: step name -> wall seconds (s), steps that ended.
        running: names of the steps that started and have not ended (outermost first).
        started: ``time.perf_counter()`` when the timer was made.
    """

    status_file: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    running: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    _begun: dict[str, float] = field(default_factory=dict, repr=False)

    def begin(self, name: str) -> None:
        """Start timing ``name`` (and write the status)."""
        self._begun[name] = time.perf_counter()
        self.running.append(name)
        self.write(RUNNING)

    def end(self, name: str) -> float:
        """Stop timing ``name``; its seconds are added to any earlier ones. Returns this part's."""
        took = time.perf_counter() - self._begun.pop(name)
        self.seconds[name] = self.seconds.get(name, 0.0) + took
        if name in self.running:
            self.running.remove(name)
        self.write(RUNNING)
        return took

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` timed elsewhere (e.g. in a background thread) to step ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def elapsed(self) -> float:
        """Seconds since the timer was made."""
        return time.perf_counter() - self.started

    def rounded(self) -> dict[str, float]:
        """The ended steps' seconds, rounded to 0.01 s."""
        return {k: round(v, 2) for k, v in self.seconds.items()}

    def status(self, state: str = RUNNING, error: str | None = None) -> dict[str, Any]:
        """The status file's content: state, running steps, their seconds so far, elapsed time.

        The times are those of the moment of writing, which ``updated`` gives (UTC): the file
        is rewritten when a step starts or ends, not while one runs.
        """
        import datetime as dt

        now = time.perf_counter()
        out: dict[str, Any] = {
            "status": state,
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "running": list(self.running),
            "running_for_s": {k: round(now - self._begun[k], 2) for k in self.running if k in self._begun},
            "seconds": self.rounded(), "elapsed_s": round(self.elapsed(), 2)}
        if error:
            out["error"] = error
        return out

    def write(self, state: str = RUNNING, error: str | None = None) -> None:
        """Rewrite the status file (if any) atomically; a failure to write is not an error."""
        if self.status_file is None:
            return
        import json

        with contextlib.suppress(OSError):  # a status file that cannot be written must not stop the run
            write_text_atomic(self.status_file, json.dumps(self.status(state, error), indent=1) + "\n")


@contextlib.contextmanager
def timed(timer: StepTimer | None, name: str) -> Iterator[None]:
    """Time the block as step ``name`` of ``timer`` (nothing when ``timer`` is None).

    A block that raises leaves its step in ``timer.running``: the status then names the step
    the run stopped in, with how long it had been running.
    """
    if timer is None:
        yield
        return
    timer.begin(name)
    yield
    timer.end(name)
