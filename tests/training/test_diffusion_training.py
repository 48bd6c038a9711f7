from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.models.unet2d import UNetConfig, build_unet
from crysgen.objectives.diffusion import DiffusionConfig, diffusion_loss, to_model_range
from crysgen.pipelines.diffusion import DiffusionModel
from crysgen.representations.crystens import CrysTensScaling
from crysgen.training.config import DiffusionTrainConfig, load_config, save_config
from crysgen.training.diffusion import export_checkpoint, train_diffusion
from tests.conftest import load_cif

TINY = {"unet": {"block_out_channels": [8, 16], "attention": [False, True],
                 "norm_num_groups": 4, "layers_per_block": 1},
        "optim": {"batch_size": 4, "max_steps": 4, "checkpoint_every": 2, "log_every": 1,
                  "warmup_steps": 1, "lr": 2e-3}}


@pytest.fixture
def tiny_set(tmp_path):
    names = ["NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO"]
    cs = CrystalSet.from_structures([load_cif(n) for n in names], ids=names, max_sites=52)
    return cs.save(tmp_path / "tiny.npz")


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_loss_falls_on_a_fixed_batch(prediction):
    torch.manual_seed(0)
    cfg = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY["unet"].items()},
                     sample_size=16)
    unet = build_unet(cfg)
    sched = DiffusionConfig(prediction=prediction).scheduler()
    x0 = to_model_range(torch.rand(4, 4, 16, 16))
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    first = diffusion_loss(unet, sched, x0, generator=torch.Generator().manual_seed(1)).item()
    for _ in range(30):
        loss = diffusion_loss(unet, sched, x0, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = diffusion_loss(unet, sched, x0, generator=torch.Generator().manual_seed(1)).item()
    assert np.isfinite(last) and last < first


def test_train_resume_and_export(tiny_set, tmp_path):
    run = tmp_path / "run"
    cfg = DiffusionTrainConfig.from_dict(TINY)
    model_dir = train_diffusion(tiny_set, run, config=cfg, val=tiny_set, progress=False,
                                accelerator="cpu")
    import csv

    metrics = list(csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()))
    assert [int(r["step"]) for r in metrics if r.get("val_loss")] == [1, 3]  # every 2 steps
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    with pytest.raises(CrysgenError, match="already holds a run"):
        train_diffusion(tiny_set, run, config=cfg, progress=False, accelerator="cpu")
    train_diffusion(tiny_set, run, resume=True, max_steps=6, progress=False, accelerator="cpu")
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 6
    # the optimizer state went on from step 4 (Adam's step counter), it did not restart
    steps = [s["step"] for s in resumed["optimizer_states"][0]["state"].values()]
    assert all(float(s) == 6 for s in steps)
    model = DiffusionModel.from_pretrained(model_dir)
    assert model.data["count"] == 4 and model.data["step"] == 6
    assert load_config(run / "config.yaml").optim.max_steps == 6  # resolved config is kept
    # a wall-clock stop between periodic checkpoints still leaves last.ckpt at the stop step
    train_diffusion(tiny_set, run, resume=True, max_steps=9, max_minutes=1e-6, progress=False,
                    accelerator="cpu")
    stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 6 < stopped < 9
    assert DiffusionModel.from_pretrained(model_dir).data["step"] == stopped
    import json

    # a periodic checkpoint exports to the same weights the run exported at that step
    from crysgen.cli import main

    assert main(["model", "export", str(run), "--step", "4", "--out", str(tmp_path / "at4")]) == 0
    at4 = DiffusionModel.from_pretrained(tmp_path / "at4")
    assert at4.data["step"] == 4 and at4.data["count"] == 4
    assert main(["model", "export", str(run), "--step", "5", "--out", str(tmp_path / "x")]) == 2
    runs = json.loads((run / "train_summary.json").read_text())["runs"]
    assert [r["end_step"] for r in runs] == [4, 6, stopped]
    assert [r["steps"] for r in runs] == [4, 2, stopped - 6]
    assert all(r["samples_per_s"] > 0 and r["device"] == "cpu" for r in runs)


def test_bad_config_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  batch_sise: 3\n")
    with pytest.raises(CrysgenError, match="batch_sise"):
        load_config(p)
    with pytest.raises(CrysgenError, match="prediction"):
        DiffusionConfig(prediction="noise")  # type: ignore[arg-type]


def test_warm_start_from_a_model_directory(tiny_set, tmp_path):
    cfg = DiffusionTrainConfig.from_dict(TINY)
    first = train_diffusion(tiny_set, tmp_path / "a", config=cfg, progress=False, accelerator="cpu")
    zero = DiffusionTrainConfig.from_dict(TINY | {"optim": TINY["optim"] | {"lr": 0.0}})
    # lr 0: the warm-started weights come through unchanged, so init really loaded them
    second = train_diffusion(tiny_set, tmp_path / "b", config=zero, init=first, progress=False,
                             accelerator="cpu")
    a, b = DiffusionModel.from_pretrained(first), DiffusionModel.from_pretrained(second)
    for (k, va), vb in zip(a.unet.state_dict().items(), b.unet.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    assert b.data["init"]["step"] == 4 and b.data["step"] == 4
    other = DiffusionTrainConfig.from_dict(TINY | {"unet": TINY["unet"] | {"layers_per_block": 2}})
    with pytest.raises(CrysgenError, match="differs"):
        train_diffusion(tiny_set, tmp_path / "c", config=other, init=first, progress=False,
                        accelerator="cpu")


class _Payload:
    """Unpickling this makes a directory: the sign that a checkpoint ran code when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_checkpoint_is_never_unpickled_as_code(tiny_set, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "code_ran"
    torch.save({"global_step": 1, "state_dict": {}, "hyper_parameters": {"config": {}},
                "epoch": 0, "payload": _Payload(marker)}, run / "checkpoints" / "last.ckpt")
    # `crysgen model export` of a user-named run directory
    with pytest.raises(CrysgenError, match=r"cannot read .* as a training checkpoint"):
        export_checkpoint(run, tmp_path / "out")
    assert not marker.exists()
    # `crysgen train diffusion --resume` of the same directory (Lightning loads the checkpoint)
    save_config(DiffusionTrainConfig.from_dict(TINY), run / "config.yaml")
    CrysTensScaling.fit(CrystalSet.load(tiny_set)).save(run / "scaling.json")
    with pytest.raises(Exception, match=r"[Ww]eights only load failed|Unsupported global"):
        train_diffusion(tiny_set, run, resume=True, progress=False, accelerator="cpu")
    assert not marker.exists()
