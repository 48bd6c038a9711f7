from __future__ import annotations

import faulthandler
import os
import signal

from crysgen.data import prepare
from crysgen.data.parallel import WORKER_DIED, robust_map
from crysgen.data.prepare import PrepareOptions, prepare_dataset
from tests.data.cifs import cif_text, write_folder


def _crash_on_3(x: int) -> int:
    if x == 3:
        faulthandler.disable()  # no stack dump from the dying child
        os.kill(os.getpid(), signal.SIGSEGV)  # what spglib did to the whole process
    return x * 10


def test_a_dead_worker_costs_its_item_a_reason_and_the_rest_finish():
    out = robust_map(_crash_on_3, list(range(10)), workers=2, chunksize=2,
                     died=lambda x, reason: f"{x}: {reason}")
    assert out[:3] == [0, 10, 20] and out[4:] == [40, 50, 60, 70, 80, 90]
    assert out[3] == f"3: {WORKER_DIED}"


def test_prepare_with_workers_survives_a_crashing_entry(tmp_path, monkeypatch):
    real = prepare.prepare_record

    def crashing(record, options):
        if record.id == "c05":
            faulthandler.disable()
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(record, options)

    monkeypatch.setattr(prepare, "prepare_record", crashing)  # forked workers inherit it
    folder = write_folder(tmp_path / "cifs", {f"c{k:02d}": cif_text() for k in range(10)})
    cs, report = prepare_dataset(folder, PrepareOptions(), workers=2, progress=False)
    assert len(cs) == 9 and "c05" not in cs.ids
    assert [(d.id, d.reason) for d in report.dropped] == [("c05", "worker_died")]


def _threads(_: int) -> tuple[int, list[int]]:
    import torch
    from threadpoolctl import threadpool_info

    return torch.get_num_threads(), [p["num_threads"] for p in threadpool_info()]


def _two_torch_threads() -> None:
    import torch

    torch.set_num_threads(2)


def test_workers_compute_with_one_thread_and_an_initializer_may_change_it():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the parent's pools must not leak into the workers
    try:
        out = robust_map(_threads, [0, 1], workers=2, died=lambda x, r: None)
        assert all(t == 1 and set(pools) <= {1} for t, pools in out)
        raised = robust_map(_threads, [0], workers=1, died=lambda x, r: None, initializer=_two_torch_threads)
        assert raised[0][0] == 2
    finally:
        torch.set_num_threads(before)
