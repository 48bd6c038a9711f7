"""Work that runs in a background thread while the evaluation goes on, collected when needed.

`crysgen evaluate` computes the reference fingerprints (CPU worker processes) while the
stability family relaxes the samples (mostly GPU): :class:`Background` runs the function in a
daemon thread (which only drives the worker processes and waits on them) and hands back its
result, or raises its exception (the same object, so the same type and message), when the
caller asks for it. A caller that stops early (an error, Ctrl-C) sets the work's ``stop`` event
and does not wait for it: the work ends at its next check, and a daemon thread never holds up
the interpreter's exit.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Generic, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

T = TypeVar("T")


class Background(Generic[T]):
    """``fn(stop)`` started in a daemon thread; :meth:`result` waits for it.

    Use it as a context manager: leaving the block (normally or by an exception) sets ``stop``
    without waiting, so work nobody will collect ends early instead of running on.

    Attributes:
        stop: the event ``fn`` should check now and then; set by :meth:`cancel`.
        seconds: wall seconds ``fn`` ran (None while it runs).
    """

    def __init__(self, fn: Callable[[threading.Event], T], name: str = "background") -> None:
        self.stop = threading.Event()
        self.seconds: float | None = None
        self._fn = fn
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            self._result = self._fn(self.stop)
        except BaseException as exc:  # kept for result(), raised there in the caller's thread
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - t0

    def result(self) -> T:
        """``fn``'s return value, once it has finished (waits; Ctrl-C interrupts the wait).

        Raises:
            BaseException: whatever ``fn`` raised, as it raised it.
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast("T", self._result)  # fn returned it

    def cancel(self) -> None:
        """Ask ``fn`` to stop (sets ``stop``); does not wait."""
        self.stop.set()

    def __enter__(self) -> Background[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()
