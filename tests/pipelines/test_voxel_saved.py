"""The voxel VAE bundle on the shared save/load mechanism: precision, segmenter part, prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from crysgen.errors import CrysgenError
from crysgen.models.unet3d import UNet3D
from crysgen.models.voxel_vae import VoxelVAE
from crysgen.pipelines.voxel import LatentPrior, SegmenterModel, VoxelModel, VoxelSpec, load_segmenter
from crysgen.representations.voxel import VoxelConfig
from crysgen.representations.watershed import WatershedOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> VoxelModel:
    torch.manual_seed(0)
    spec = VoxelSpec(VoxelConfig(grid=16), "x", list(map(float, range(9))), [1.0] * 95)
    prior = LatentPrior.fit(np.random.default_rng(0).normal(size=(5, 4)), np.zeros((5, 4)))
    return VoxelModel(VoxelVAE(grid=16, width=0.25).eval(), UNet3D(width=0.125).eval(), spec, {"name": "t"},
                      prior=prior)


@pytest.mark.parametrize("half", [True, False])
def test_voxel_model_saves_in_either_precision_and_loads_float32(tmp_path, model, half):
    path = model.save_pretrained(tmp_path / "m", half=half)
    stored = torch.float16 if half else torch.float32
    for weights in (path / "weights.safetensors", path / "segmenter" / "weights.safetensors"):
        assert {v.dtype for v in load_file(str(weights)).values() if v.is_floating_point()} == {stored}
    again = VoxelModel.from_pretrained(path)
    for net, original in ((again.vae, model.vae), (again.segmenter, model.segmenter)):
        for k, v in net.state_dict().items():
            want = original.state_dict()[k]
            if v.is_floating_point():
                assert v.dtype == torch.float32
                want = want.half().float() if half else want
            assert torch.equal(v, want), k
    assert again.prior is not None and np.array_equal(again.prior.chol, model.prior.chol)
    assert again.spec == model.spec
    net, spec = load_segmenter(path / "segmenter")
    assert isinstance(net, UNet3D) and spec == model.spec


def test_default_is_fp16_as_before(tmp_path, model):
    path = model.save_pretrained(tmp_path / "m")
    assert load_file(str(path / "weights.safetensors"))["mu.weight"].dtype == torch.float16


def test_kinds_are_told_apart(tmp_path, model):
    path = model.save_pretrained(tmp_path / "m")
    with pytest.raises(CrysgenError, match="not a voxel segmenter"):
        SegmenterModel.from_pretrained(path)
    with pytest.raises(CrysgenError, match="not a voxel VAE"):
        VoxelModel.from_pretrained(path / "segmenter")
    (path / "voxel.json").unlink()
    with pytest.raises(CrysgenError, match=r"missing voxel\.json"):
        VoxelModel.from_pretrained(path)


def test_spec_keeps_its_merge_tol_and_an_older_spec_decodes_with_the_default(tmp_path):
    spec = VoxelSpec(VoxelConfig(grid=16), "x", [0.5], [1.0] * 95, merge_tol=1.358)
    loaded = VoxelSpec.load(spec.save(tmp_path / "voxel.json"))
    assert loaded.merge_tol == 1.358 and loaded.watershed().merge_tol == 1.358
    old = tmp_path / "old.json"  # written before merge_tol existed
    old.write_text((tmp_path / "voxel.json").read_text().replace('"merge_tol": 1.358', '"x": 0'))
    assert VoxelSpec.load(old).merge_tol is None
    assert VoxelSpec.load(old).watershed() == WatershedOptions()
