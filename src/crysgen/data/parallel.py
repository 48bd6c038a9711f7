"""A process-pool map that survives workers dying (a segfault in native code, the OOM killer).

``multiprocessing.Pool`` waits forever for the result of a worker that died; this map notices
(``BrokenProcessPool``), runs each entry that was in flight when the pool broke once more on its
own, gives the entries that kill their process again a result made by ``died`` (a reason), and
goes on with the rest in a fresh pool. Results come back in input order.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

WORKER_DIED = ("worker_died: the process working on this entry died (exit without a result, "
               "e.g. a crash inside a native library)")
"""The reason given to an entry whose process died twice (once in the pool, once alone)."""


def died_with_reason(_item: Any, reason: str) -> str:
    """A ``died`` for :func:`robust_map` whose results are strings on failure: the reason itself."""
    return reason


def _run_chunk(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    return [fn(x) for x in items]


def _start_worker(initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    """Every worker computes with one thread (the workers share the cores), then ``initializer``."""
    import sys

    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # BLAS and OpenMP pools, for the life of the process
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def _context() -> Any:
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def robust_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int,
    died: Callable[[T, str], R],
    chunksize: int = 1,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
    on_done: Callable[[int], Any] | None = None,
    context: Any = None,
) -> list[R]:
    """``[fn(x) for x in items]`` in ``workers`` processes, surviving dead workers.

    An entry whose process dies (twice: in the pool, then alone) gets ``died(x, reason)``
    instead of ``fn(x)``, and the run goes on.

    Args:
        fn: a picklable (module-level) function of one item.
        items: the inputs.
        workers: processes at once.
        died: result for an item whose process died (called with the item and
            :data:`WORKER_DIED`).
        chunksize: items per task.
        initializer: run once in every worker process, after its BLAS, OpenMP and torch
            thread pools were set to one thread (an initializer may raise them again).
        initargs: its arguments.
        on_done: called with the number of items finished, as they finish (progress bars).
        context: a multiprocessing context (default: fork where available).

    Returns:
        One result per item, in input order.
    """
    ctx = context or _context()
    n = len(items)
    results: list[Any] = [None] * n
    done = [False] * n
    chunks = [list(range(i, min(i + chunksize, n))) for i in range(0, n, max(1, chunksize))]
    queue: Iterator[list[int]] = iter(chunks)
    suspects: list[int] = []
    while True:
        broken = _run_pool(fn, items, queue, workers, ctx, initializer, initargs,
                           results, done, on_done)
        if broken is None:
            break
        suspects += broken
        for i in suspects:  # each alone: an innocent bystander finishes, the culprit dies again
            alone = _run_pool(fn, items, iter([[i]]), 1, ctx, initializer, initargs,
                              results, done, on_done)
            if alone:
                results[i] = died(items[i], WORKER_DIED)
                done[i] = True
                if on_done:
                    on_done(1)
        suspects = []
    return results


def _run_pool(fn: Callable[[Any], Any], items: Sequence[Any], queue: Iterator[list[int]],
              workers: int, ctx: Any, initializer: Callable[..., Any] | None,
              initargs: tuple[Any, ...], results: list[Any], done: list[bool],
              on_done: Callable[[int], Any] | None) -> list[int] | None:
    """Run chunks from ``queue`` with at most ``2 * workers`` in flight.

    Returns:
        None when all ran, else the indices in flight when the pool broke (few: a broken pool
        leaves few suspects).
    """
    in_flight: dict[Future, list[int]] = {}
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                               initargs=(initializer, initargs))
    try:
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < 2 * workers:
                idx = next(queue, None)
                if idx is None:
                    exhausted = True
                    break
                try:
                    in_flight[pool.submit(_run_chunk, fn, [items[i] for i in idx])] = idx
                except BrokenProcessPool:
                    return [i for ix in in_flight.values() for i in ix] + idx
            if not in_flight:
                return None
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = False
            for fut in list(in_flight) if any(_broke(f) for f in finished) else finished:
                if not fut.done() or _broke(fut):
                    broken = True
                    continue
                idx = in_flight.pop(fut)
                for i, r in zip(idx, fut.result(), strict=True):
                    results[i], done[i] = r, True
                if on_done:
                    on_done(len(idx))
            if broken:
                return sorted(i for ix in in_flight.values() for i in ix)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _broke(fut: Future) -> bool:
    return fut.done() and isinstance(fut.exception(), BrokenProcessPool)
