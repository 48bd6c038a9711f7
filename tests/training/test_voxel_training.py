from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.models.unet3d import UNet3D
from crysgen.models.voxel_vae import VoxelVAE
from crysgen.objectives.voxel import class_weights, segmentation_loss, vae_loss
from crysgen.pipelines.voxel import VoxelModel, load_segmenter, one_hot
from crysgen.representations.voxel import VoxelConfig, encode
from crysgen.training.config import VoxelTrainConfig
from crysgen.training.voxel import VoxelBatches, device_inputs, init_weights, train_voxel
from tests.conftest import load_cif, shared_file


@pytest.fixture(scope="module")
def perov(tmp_path_factory):
    from crysgen.data.prepare import PrepareOptions, prepare_dataset

    cs, _ = prepare_dataset(shared_file("perov_5", "val.csv.gz"), PrepareOptions(limit=16), workers=1,
                            progress=False)
    path = tmp_path_factory.mktemp("voxel") / "perov.npz"
    cs.save(path)
    return path


def test_class_weights_inverse_frequency_background_zero():
    species = np.array([0, 0, 0, 0, 8, 8, 22, 0])
    w = class_weights(species)
    assert w[0] == 0 and w[8] == pytest.approx(8 / 2) and w[22] == pytest.approx(8 / 1) and w[1] == 0


def test_device_inputs_rebuild_coordinates_and_rotate_consistently():
    cs = CrystalSet.from_structures([load_cif("SrTiO3")])
    g = encode(cs)
    batch = {"density": torch.from_numpy(g.inputs[:, 0]).half(), "species": torch.from_numpy(g.species),
             "lengths": torch.tensor(cs.lattice[:, :3], dtype=torch.float32),
             "condition": torch.zeros(1, dtype=torch.long)}
    x, sp = device_inputs(batch, VoxelConfig(), rotate=False)
    assert torch.allclose(x[:, 1:], torch.from_numpy(g.inputs[:, 1:]), atol=1e-5)
    xr, spr = device_inputs(batch, VoxelConfig(), rotate=True, generator=np.random.default_rng(0))
    occupied = spr[0] > 0
    assert occupied.sum() == (sp[0] > 0).sum()
    assert xr[0, 0][occupied].mean() > xr[0, 0][~occupied].mean()  # density moved with the labels


def test_tiny_segmenter_and_vae_steps_reduce_their_losses():
    torch.manual_seed(0)
    cs = CrystalSet.from_structures([load_cif("SrTiO3"), load_cif("NaCl")])
    g = encode(cs)
    x, species = torch.from_numpy(g.inputs), torch.from_numpy(g.species).long()
    weights = torch.from_numpy(class_weights(g.species)).float()
    unet = UNet3D(width=0.125)
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss, _ = segmentation_loss(*unet(x), species, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    unet.eval().requires_grad_(False)
    vae = VoxelVAE(width=0.25)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    cond = one_hot(np.array([0, 3]), 10)
    losses = []
    for _ in range(8):
        recon, mu, logvar = vae(x, cond, generator=torch.Generator().manual_seed(0))
        loss, parts = vae_loss(x, recon, mu, logvar, unet.features(x), unet.features(recon))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert float(parts["dfc"]) > 0
    assert losses[-1] < losses[0]


def test_train_segmenter_then_vae_then_sample(perov, tmp_path):
    small = {"max_steps": 2, "batch_size": 4, "workers": 1, "checkpoint_every": 2, "log_every": 1}
    seg = train_voxel(perov, tmp_path / "seg", config=VoxelTrainConfig.from_dict(
        {"kind": "segmenter", "width": 0.125, "optim": small}), progress=False)
    assert (seg / "voxel.json").is_file()
    warm = VoxelTrainConfig.from_dict({"kind": "segmenter", "width": 0.125, "optim": small})
    state = init_weights(warm, seg)
    assert all(torch.equal(state[k], v) for k, v in load_segmenter(seg)[0].state_dict().items())
    with pytest.raises(CrysgenError, match="does not fit"):
        init_weights(replace(warm, width=0.25), seg)
    one_step = replace(warm, optim=replace(warm.optim, max_steps=1))
    assert (train_voxel(perov, tmp_path / "warm", config=one_step, init=seg, progress=False)
            / "voxel.json").is_file()
    with pytest.raises(CrysgenError, match="cannot be combined"):
        train_voxel(perov, tmp_path / "warm", init=seg, resume=True, progress=False)
    with pytest.raises(CrysgenError, match="segmenter"):
        train_voxel(perov, tmp_path / "bad", kind="vae", progress=False)
    with pytest.raises(CrysgenError, match="no property 'nope'"):
        train_voxel(perov, tmp_path / "bad2", config=VoxelTrainConfig.from_dict(
            {"kind": "vae", "condition": "nope", "segmenter": str(seg), "optim": small}), progress=False)
    vae_dir = train_voxel(perov, tmp_path / "vae", config=VoxelTrainConfig.from_dict(
        {"kind": "vae", "width": 0.25, "condition": "heat_ref", "segmenter": str(seg), "optim": small}),
        progress=False)
    model = VoxelModel.from_pretrained(vae_dir)
    assert len(model.spec.edges) == 9
    res = model.generate(3, seed=0, condition=4)
    assert len(res.crystals) + len(res.failures) == 3  # an untrained model: reasons, no crash
    cs = CrystalSet.load(perov)
    mu, cls = model.base(f"{perov}:{cs.ids[0]}")
    z, classes = model.latents(5, seed=1, around=mu, sigma2=0.5, condition=cls)
    assert np.all(classes == cls)
    assert z.shape == (5, 256) and np.abs(z - mu).mean() == pytest.approx(np.sqrt(0.5) * 0.8, rel=0.3)


def test_voxel_batches_hand_out_whole_batches():
    ds = VoxelBatches(np.zeros((5, 4, 4, 4), np.float16), np.zeros((5, 4, 4, 4), np.uint8),
                      np.ones((5, 3)), np.arange(5))
    b = ds.__getitems__([0, 3])
    assert b["density"].shape == (2, 4, 4, 4) and b["condition"].tolist() == [0, 3]
