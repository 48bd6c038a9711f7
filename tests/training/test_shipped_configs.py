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
