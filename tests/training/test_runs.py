from __future__ import annotations

import itertools
import math

import pytest
import torch

from crysgen import CrysgenError
from crysgen.training.config import OptimConfig
from crysgen.training.runs import (
    PassShuffle,
    adamw_with_warmup,
    batch_loader,
    ema_copy,
    ema_decay_at,
    lr_factor,
)


def test_warm_up_then_constant_by_default():
    optim = OptimConfig(warmup_steps=10, max_steps=100)
    assert lr_factor(0, optim) == pytest.approx(0.1)
    assert lr_factor(4, optim) == pytest.approx(0.5)
    assert [lr_factor(s, optim) for s in (9, 50, 99, 500)] == [1.0, 1.0, 1.0, 1.0]


def test_cosine_decay_reaches_its_floor_at_max_steps_and_holds_it():
    optim = OptimConfig(warmup_steps=10, max_steps=110, lr_decay="cosine", lr_min_ratio=0.1)
    assert lr_factor(9, optim) == pytest.approx(1.0)
    assert lr_factor(59, optim) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(109, optim) == pytest.approx(0.1)
    assert lr_factor(1000, optim) == pytest.approx(0.1)
    rates = [lr_factor(s, optim) for s in range(9, 110)]
    assert all(a >= b for a, b in itertools.pairwise(rates))


def test_the_scheduler_lightning_steps_follows_the_factor():
    optim = OptimConfig(lr=1e-3, warmup_steps=2, max_steps=12, lr_decay="cosine", lr_min_ratio=0.0)
    p = torch.nn.Parameter(torch.zeros(1))
    conf = adamw_with_warmup([p], optim)
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(14):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[1] == pytest.approx(1e-3)
    assert seen[11] == pytest.approx(0.0, abs=1e-12) and seen[13] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kw", [{"lr_decay": "linear"}, {"lr_min_ratio": 1.5}])
def test_bad_schedule_settings_are_refused(kw):
    with pytest.raises(CrysgenError, match=r"optim\.lr_"):
        OptimConfig(**kw)


def test_throughput_steady_rate_leaves_out_the_warm_up(monkeypatch):
    from types import SimpleNamespace

    from crysgen.training import runs

    clock = iter([0.0, 10.0, 12.0, 12.0])  # start; after warm-up (a slow first step); end; (spare)
    monkeypatch.setattr(runs.time, "perf_counter", lambda: next(clock))
    speed = runs.Throughput(steps_per_iteration=1, samples_per_iteration=4, warmup=1)
    trainer = SimpleNamespace(global_step=0, world_size=2, precision="32-true")
    pl_module = SimpleNamespace(device=torch.device("cpu"))
    speed.on_train_start(trainer, pl_module)
    for step in range(1, 6):  # 5 iterations: 1 of warm-up (10 s), 4 in the next 2 s
        trainer.global_step = step
        speed.on_train_batch_end(trainer)
    speed.on_train_end(trainer, pl_module)
    r = speed.result
    assert r["steps"] == 5 and r["global_batch"] == 8
    assert r["steps_per_s"] == pytest.approx(5 / 12, abs=1e-3)
    assert r["steady_steps_per_s"] == pytest.approx(2.0)
    assert r["steady_samples_per_s"] == pytest.approx(16.0)


def test_an_export_that_has_no_use_for_data_refuses_it_before_reading_a_checkpoint(tmp_path):
    from crysgen.training.exports import export_checkpoint

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"kind": "diffusion"}')
    with pytest.raises(CrysgenError, match="'diffusion' run does not use the training data"):
        export_checkpoint(tmp_path, tmp_path / "out", data=tmp_path / "train.npz")
    with pytest.raises(CrysgenError, match="no checkpoint"):  # without data: on to the diffusion exporter
        export_checkpoint(tmp_path, tmp_path / "out")


def _ema_after(values: list[float], *, warmup: bool) -> float:
    """The EMA copy's weight after a one-weight network took each of ``values`` in turn."""
    net = torch.nn.Linear(1, 1, bias=False)
    ema = ema_copy(net, 0.999, warmup=warmup)
    for v in values:
        net.weight.data.fill_(v)
        ema.update_parameters(net)
    return float(ema.module.weight)


def test_ema_warm_up_forgets_the_first_weights_and_reaches_the_decay():
    assert ema_decay_at(0.999, 1, warmup=True) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 100_000, warmup=True) == 0.999
    assert ema_decay_at(0.999, 1, warmup=False) == 0.999
    # first update copies (0), then the weight is 1 for 99 more updates
    with_warmup = _ema_after([0.0] + [1.0] * 99, warmup=True)
    without = _ema_after([0.0] + [1.0] * 99, warmup=False)
    assert with_warmup == pytest.approx(1 - math.prod((1 + n) / (10 + n) for n in range(1, 100)), rel=1e-5)
    assert with_warmup > 0.99  # the random start is forgotten
    assert without == pytest.approx(1 - 0.999 ** 99, rel=1e-5)  # ~9 %: mostly the start


def test_ema_warm_up_is_on_by_default_and_its_count_survives_a_checkpoint():
    assert OptimConfig().ema_warmup
    net = torch.nn.Linear(1, 1, bias=False)
    ema = ema_copy(net, 0.999)
    for _ in range(5):
        ema.update_parameters(net)
    restored = ema_copy(torch.nn.Linear(1, 1, bias=False), 0.999)
    restored.load_state_dict(ema.state_dict())
    assert int(restored.n_averaged) == 5  # the resumed schedule continues at update 5


@pytest.mark.parametrize("rank0_up, local_up", [(False, True), (True, False), (True, True), (False, False)])
def test_wall_clock_stop_follows_rank_0_on_every_rank(monkeypatch, rank0_up, local_up):
    # under DDP a rank whose own clock ran out first must not stop alone: the other ranks would
    # wait for it in their next gradient all-reduce; the stop is rank 0's decision, broadcast
    from types import SimpleNamespace

    from crysgen.training import runs

    stop = runs.WallClockStop(minutes=1.0)
    stop.start = 0.0
    monkeypatch.setattr(runs.time, "monotonic", lambda: 61.0 if local_up else 59.0)
    asked = []

    def broadcast(value):
        asked.append(value)
        return rank0_up

    trainer = SimpleNamespace(should_stop=False, strategy=SimpleNamespace(broadcast=broadcast))
    stop.on_train_batch_end(trainer)
    assert asked == [local_up] and trainer.should_stop is rank0_up


def test_pass_shuffle_takes_up_the_stream_of_batches_where_training_stands():
    plain = PassShuffle(10, seed=3, batch_size=4, drop_last=True)  # 2 batches of 4 per pass
    full = PassShuffle(10, seed=3, batch_size=4, drop_last=True)
    full.follow = True
    passes = []
    for _ in range(3):
        passes.append(list(full))
        full.trained += 2
    assert all(sorted(p) == list(range(10)) for p in passes)
    assert len({tuple(p) for p in passes}) == 3  # a new order every pass
    assert [list(plain) for _ in range(3)] == passes  # on its own: the next whole pass each time
    resumed = PassShuffle(10, seed=3, batch_size=4, drop_last=True)
    resumed.follow, resumed.trained = True, 3  # stopped after the first batch of pass 1
    assert list(resumed) == passes[1][4:]
    resumed.trained = 4
    assert list(resumed) == passes[2]


def test_a_shuffled_batch_loader_keeps_the_global_generator_for_the_training_noise():
    torch.manual_seed(0)
    loader = batch_loader(torch.arange(12.0), batch_size=4, shuffle=True)
    state = torch.get_rng_state()
    batches = [b.tolist() for b in loader] + [b.tolist() for b in loader]
    assert torch.equal(torch.get_rng_state(), state)  # making passes drew nothing from it
    assert sorted(x for b in batches[:3] for x in b) == list(range(12)) and batches[:3] != batches[3:]
