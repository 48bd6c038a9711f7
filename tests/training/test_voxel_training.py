from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.models.unet3d import UNet3D
from crysgen.models.voxel_vae import VoxelVAE
from crysgen.objectives.voxel import channel_weights, class_weights, segmentation_loss, vae_loss
from crysgen.pipelines import voxel as voxel_pipeline
from crysgen.pipelines.sampling import SampleOptions, sample_to_dir
from crysgen.pipelines.voxel import VoxelModel, load_segmenter, one_hot
from crysgen.representations.voxel import (
    VoxelConfig,
    coordinate_channels,
    density,
    encode,
    network_input,
    random_rotation,
    read_lattice,
    rotate,
    rotated_lengths,
    species_map,
)
from crysgen.training.config import VoxelTrainConfig
from crysgen.training.voxel import (
    VoxelBatches,
    VoxelModule,
    device_inputs,
    init_weights,
    train_voxel,
    usable,
)
from tests.conftest import load_cif, shared_file
from tests.objectives.test_voxel import LENGTHS, perovskites


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


def _batch(cs: CrystalSet, voxel: VoxelConfig = VoxelConfig()) -> dict[str, torch.Tensor]:
    return {"density": torch.from_numpy(density(cs, voxel)),
            "species": torch.from_numpy(species_map(cs, voxel)),
            "lengths": torch.tensor(cs.lattice[:, :3], dtype=torch.float32),
            "condition": torch.zeros(len(cs), dtype=torch.long)}


def test_grid_coordinates_ramp_up_along_their_own_axes_after_rotation():
    s = load_cif("SrTiO3").copy()
    s.lattice = s.lattice.__class__.orthorhombic(4.0, 5.0, 6.5)
    cs = CrystalSet.from_structures([s, s])
    batch = _batch(cs)
    x, species = device_inputs(batch, VoxelConfig(), rotate=True, generator=np.random.default_rng(1),
                               coordinates="grid")
    rng = np.random.default_rng(1)
    for i in range(2):
        rotation = random_rotation(rng)  # the draws device_inputs made
        lengths = rotated_lengths(cs.lattice[i, :3], rotation)
        assert torch.allclose(x[i, 1:], torch.from_numpy(coordinate_channels(lengths)[0]), atol=1e-5)
        assert torch.equal(x[i, 0], torch.from_numpy(rotate(batch["density"][i].numpy(), rotation)))
        assert torch.equal(species[i], torch.from_numpy(rotate(batch["species"][i].numpy(), rotation)).long())
    # the authors' mode turns the channels with the grid: some channel ramps along another axis
    xr, _ = device_inputs(batch, VoxelConfig(), rotate=True, generator=np.random.default_rng(1))
    assert torch.equal(xr[:, 0], x[:, 0])
    assert not torch.allclose(xr[:, 1:], x[:, 1:])
    assert read_lattice(xr[:, 1:].numpy()) == pytest.approx(read_lattice(x[:, 1:].numpy()), abs=1e-5)


@pytest.mark.filterwarnings("ignore:You are trying to")
def test_tiny_vae_learns_each_crystals_lattice_on_a_fixed_batch():
    """Within a few dozen steps the μ-reconstructions' lattices, read back from the decoded coordinate
    channels, are in the right order and beat the best constant guess (the batch's mean cell).

    The run's mechanism as configured for perov_5: channels scaled by their RMS, the coordinate
    channels weighted by the density's across-crystal variance over theirs, grid coordinates.
    With the authors' unscaled channels, 60 steps leave every length under 2 Å."""
    torch.manual_seed(0)
    voxel = VoxelConfig(grid=16)
    cs = perovskites()
    x = network_input(cs, voxel)
    scale = np.sqrt((x.astype(np.float64) ** 2).mean(axis=(0, 2, 3, 4)))
    weights = channel_weights(x / scale[:, None, None, None].astype(np.float32))
    cfg = VoxelTrainConfig.from_dict({"kind": "vae", "width": 0.25, "alpha": 0.0, "coordinates": "grid",
                                      "voxel": voxel.to_dict(), "optim": {"lr": 3e-3, "rotate": False}})
    spec = {"voxel": voxel.to_dict(), "class_weights": [0.0] * 95, "channel_weights": weights.tolist(),
            "channel_scale": scale.tolist()}
    module = VoxelModule(cfg.to_dict(), spec)
    batch = _batch(cs, voxel)
    cond = one_hot(np.zeros(len(cs), int), 10)
    truth = np.asarray(LENGTHS)[:, None]

    def lengths() -> np.ndarray:
        with torch.no_grad():  # train-mode BatchNorm: the batch's statistics
            xs = torch.from_numpy(x) / module.channel_scale
            recon = module.net.decode(module.net.encode(xs, cond)[0], cond) * module.channel_scale
        return read_lattice(recon[:, 1:].numpy(), voxel, method="slope")

    opt = module.configure_optimizers()
    losses = []
    for step in range(60):
        loss = module.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    got = lengths()
    constant_guess = float(np.abs(truth - truth.mean()).mean())
    assert np.abs(got - truth).mean() < 0.7 * constant_guess
    assert (np.diff(got.mean(1)) > 0).all()  # each crystal's own cell, in order
    assert losses[-1] < 0.5 * losses[0]


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


def test_train_segmenter_then_vae_then_sample(perov, tmp_path, monkeypatch):
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
    with pytest.raises(CrysgenError, match="channel_scale must be"):
        VoxelTrainConfig.from_dict({"kind": "vae", "channel_scale": "max"})
    with pytest.raises(CrysgenError, match="4 non-negative"):
        VoxelTrainConfig.from_dict({"kind": "vae", "channel_weights": [1, 2]})
    with pytest.raises(CrysgenError, match="no property 'nope'"):
        train_voxel(perov, tmp_path / "bad2", config=VoxelTrainConfig.from_dict(
            {"kind": "vae", "condition": "nope", "segmenter": str(seg), "optim": small}), progress=False)
    vae_dir = train_voxel(perov, tmp_path / "vae", config=VoxelTrainConfig.from_dict(
        {"kind": "vae", "width": 0.25, "condition": "heat_ref", "segmenter": str(seg), "optim": small,
         "coordinates": "grid", "channel_scale": "rms", "channel_weights": "variance"}), progress=False)
    model = VoxelModel.from_pretrained(vae_dir)
    assert len(model.spec.edges) == 9
    x = network_input(CrystalSet.load(perov))
    assert model.spec.channel_scale == pytest.approx(np.sqrt((x.astype(np.float64) ** 2).mean((0, 2, 3, 4))),
                                                     rel=1e-4)
    assert model.spec.channel_weights[0] == 1.0 and len(model.spec.channel_weights) == 4
    assert model.spec.readback == "slope"  # grid coordinates: no orientation blends to survive
    # merge_tol: the usable training crystals' nearest-neighbour distance at its 0.1 % quantile
    # (with 16 crystals: between the smallest and second smallest), which decoding uses
    used = usable(CrystalSet.load(perov), model.spec.voxel).to_structures()
    nearest = sorted(min(n.nn_distance for site in s.get_all_neighbors(6.0) for n in site) for s in used)
    assert nearest[0] <= model.spec.merge_tol <= nearest[1]
    seen: list = []
    real = voxel_pipeline.decode
    monkeypatch.setattr(voxel_pipeline, "decode", lambda *a, **k: seen.append(k["options"]) or real(*a, **k))
    model.to_crystals(model.decode_grids(*model.latents(1, seed=0)))
    model.generate(1, merge_tol=2.5)
    assert [o.merge_tol for o in seen] == [model.spec.merge_tol, 2.5]
    monkeypatch.undo()
    z, cls = model.latents(2, seed=0)
    with torch.no_grad():  # decoded grids come back in electrons/Å³ and Å
        raw = model.vae.eval().decode(torch.from_numpy(z), one_hot(cls, 10)).numpy()
    scale = model.spec.scale()[:, None, None, None]
    assert model.decode_grids(z, cls) == pytest.approx(raw * scale, rel=1e-5)
    # the export fitted the posterior-matched prior on the training crystals' posteriors
    assert model.prior is not None and model.prior.n == 16
    exported = model.prior
    refit = model.fit_prior(CrystalSet.load(perov), model.spec.condition_class(
        CrystalSet.load(perov).properties["heat_ref"]))  # from the crystals, as for an older model
    assert refit.mean == pytest.approx(exported.mean, abs=1e-3)
    assert refit.chol == pytest.approx(exported.chol, abs=1e-3)
    zp, _ = model.latents(4, seed=0, prior="posterior")
    assert zp == pytest.approx(model.prior.sample(model.latents(4, seed=0)[0]), abs=1e-4)
    with pytest.raises(CrysgenError, match="prior must be one of"):
        model.latents(1, prior="uniform")
    summary = sample_to_dir(vae_dir, tmp_path / "posterior", SampleOptions(n=2, prior="posterior"),
                            progress=False)
    assert summary.n == 2 and summary.decoded + summary.failures == 2
    recorded = json.loads((tmp_path / "posterior" / "sample_config.json").read_text())["sampler"]
    assert recorded["merge_tol"] == model.spec.merge_tol  # the model's own unless --merge-tol
    sample_to_dir(vae_dir, tmp_path / "merge", SampleOptions(n=1, merge_tol=2.5), progress=False)
    assert json.loads((tmp_path / "merge" / "sample_config.json").read_text())["sampler"]["merge_tol"] == 2.5
    with pytest.raises(CrysgenError, match="--merge-tol must be positive"):
        SampleOptions(n=1, merge_tol=0)
    (vae_dir / "latent_prior.npz").unlink()
    with pytest.raises(CrysgenError, match=r"no latent_prior\.npz"):
        sample_to_dir(vae_dir, tmp_path / "none", SampleOptions(n=2, prior="posterior"), progress=False)
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


def test_export_of_a_checkpoint_is_the_run_s_own_export_at_that_step(perov, tmp_path, capsys):
    import shutil

    from crysgen.cli import main
    from crysgen.pipelines.voxel import SegmenterModel

    small = {"max_steps": 2, "batch_size": 4, "workers": 1, "checkpoint_every": 2, "log_every": 1}
    seg_run, vae_run = tmp_path / "seg", tmp_path / "vae"
    seg_config = VoxelTrainConfig.from_dict({"kind": "segmenter", "width": 0.125, "optim": small})
    shutil.copytree(train_voxel(perov, seg_run, config=seg_config, progress=False), tmp_path / "seg2")
    train_voxel(perov, seg_run, resume=True, max_steps=4, progress=False)
    vae_config = VoxelTrainConfig.from_dict(
        {"kind": "vae", "width": 0.25, "condition": "heat_ref", "segmenter": str(tmp_path / "seg2"),
         "optim": small, "channel_scale": "rms"})
    shutil.copytree(train_voxel(perov, vae_run, config=vae_config, progress=False), tmp_path / "vae2")
    train_voxel(perov, vae_run, resume=True, max_steps=4, progress=False)

    def export(run, name, *extra):
        return main(["model", "export", str(run), "--step", "2", "--out", str(tmp_path / name), *extra])

    def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(x, y, msg=k)

    assert export(seg_run, "seg_at2") == 0
    own, at2, last = (SegmenterModel.from_pretrained(p) for p in (tmp_path / "seg2", tmp_path / "seg_at2",
                                                                   seg_run / "model"))
    assert at2.data == own.data and at2.data["step"] == 2 and at2.spec == own.spec
    assert_same_weights(own.net, at2.net)  # step 2's, not step 4's
    assert any(not torch.equal(a, b) for a, b in zip(own.net.state_dict().values(),
                                                     last.net.state_dict().values(), strict=True))

    capsys.readouterr()
    assert export(vae_run, "vae_at2") == 2  # the prior is fitted on the training crystals
    assert "pass --data with the run's training set (perov.npz, 16 crystals" in capsys.readouterr().err
    assert export(vae_run, "vae_at2", "--data", str(perov)) == 0
    own, at2, last = (VoxelModel.from_pretrained(p) for p in (tmp_path / "vae2", tmp_path / "vae_at2",
                                                               vae_run / "model"))
    assert at2.data == own.data and at2.data["step"] == 2 and at2.spec == own.spec
    assert_same_weights(own.vae, at2.vae)
    assert_same_weights(own.segmenter, at2.segmenter)
    assert own.prior is not None and at2.prior is not None and last.prior is not None
    assert at2.prior.n == own.prior.n == 16
    np.testing.assert_allclose(at2.prior.mean, own.prior.mean, rtol=1e-5, atol=1e-6)  # of step 2's VAE
    np.testing.assert_allclose(at2.prior.chol, own.prior.chol, rtol=1e-5, atol=1e-6)
    assert not np.allclose(at2.prior.mean, last.prior.mean, rtol=1e-5, atol=1e-6)
    assert main(["model", "export", str(vae_run), "--step", "3", "--data", str(perov), "--out",
                 str(tmp_path / "x")]) == 2
