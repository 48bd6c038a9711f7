"""Every YAML under configs/ loads into the config class of the trainer its name says."""

from __future__ import annotations

from pathlib import Path

import pytest

from crysgen.training.config import AtomTrainConfig, DiffusionTrainConfig, VoxelTrainConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
CLASSES = {"atom_diffusion_": AtomTrainConfig, "diffusion_": DiffusionTrainConfig,
           "cascade_": DiffusionTrainConfig, "voxel_": VoxelTrainConfig}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_shipped_config_loads(path):
    klass = next((k for prefix, k in CLASSES.items() if path.stem.startswith(prefix)), None)
    assert klass is not None, f"{path.name}: no trainer for this name"
    assert isinstance(load_config(path, klass), klass)


def test_every_trainer_has_a_shipped_config():
    assert len(CONFIGS) >= 20 and {p.stem.split("_")[0] for p in CONFIGS} >= {"atom", "diffusion", "voxel"}


def test_set_overrides_a_setting_and_refuses_what_the_config_lacks():
    from crysgen import CrysgenError
    from crysgen.training.config import parse_overrides, with_overrides

    base = load_config(CONFIGS[0].parent / "diffusion_mp20_s32_edm.yaml")
    small = with_overrides(base, parse_overrides(["unet.block_out_channels=[32, 64, 128, 128]",
                                                  "optim.lr=1e-4"]))
    assert small.unet.block_out_channels == (32, 64, 128, 128) and small.optim.lr == 1e-4
    assert small.diffusion == base.diffusion and small.crystens == base.crystens  # the rest kept
    with pytest.raises(CrysgenError, match="learning_rate"):
        with_overrides(base, parse_overrides(["optim.learning_rate=1"]))  # a typo is an error
    with pytest.raises(CrysgenError, match="KEY=VALUE"):
        parse_overrides(["optim.lr"])
    with pytest.raises(CrysgenError, match="is a value, not a section"):
        with_overrides(base, parse_overrides(["optim.lr.x=1"]))


def test_train_set_reaches_the_run_config_and_is_refused_on_resume(tmp_path):
    from crysgen.cli import main
    from crysgen.crystal_set import CrystalSet
    from crysgen.training.config import AtomTrainConfig
    from tests.conftest import load_cif

    data = CrystalSet.from_structures([load_cif(n) for n in ("NaCl", "SrTiO3")]).save(tmp_path / "d.npz")
    tiny = ["--set", "net={d_model: 16, n_layers: 1, n_heads: 2, edge_hidden: 8}",
            "--set", "optim.batch_size=2", "--set", "optim.warmup_steps=1", "--set", "compile=false"]
    run = tmp_path / "run"
    assert main(["train", "atom-diffusion", "--data", str(data), "--out", str(run), "--max-steps", "1",
                 "--quiet", *tiny, "--set", "data.permute_axes=true"]) == 0
    saved = load_config(run / "config.yaml", AtomTrainConfig)
    assert saved.data.permute_axes and saved.net.d_model == 16 and saved.optim.batch_size == 2
    assert main(["train", "atom-diffusion", "--data", str(data), "--out", str(run), "--resume",
                 "--max-steps", "2", "--quiet", "--set", "optim.lr=1"]) == 2
