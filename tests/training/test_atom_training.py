from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.pipelines.atoms import AtomDiffusionModel
from crysgen.training.atoms import train_atom_diffusion
from crysgen.training.config import AtomTrainConfig
from tests.conftest import load_cif

TINY = {"net": {"d_model": 32, "n_layers": 2, "n_heads": 4, "edge_hidden": 16},
        "optim": {"batch_size": 2, "max_steps": 4, "checkpoint_every": 2, "log_every": 1,
                  "warmup_steps": 1, "lr": 1e-3}}


@pytest.fixture
def tiny_set(tmp_path):
    names = ["NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO"]
    return CrystalSet.from_structures([load_cif(n) for n in names], ids=names).save(tmp_path / "tiny.npz")


def test_train_resume_export_and_init(tiny_set, tmp_path):
    cfg = AtomTrainConfig.from_dict(TINY)
    model_dir = train_atom_diffusion(tiny_set, tmp_path / "run", config=cfg, max_steps=2, accelerator="cpu",
                                     progress=False)
    first = AtomDiffusionModel.from_pretrained(model_dir)
    assert first.data["step"] == 2 and first.spec.max_atoms == 8  # the largest training crystal
    model_dir = train_atom_diffusion(tiny_set, tmp_path / "run", resume=True, max_steps=4, accelerator="cpu",
                                     progress=False)
    resumed = AtomDiffusionModel.from_pretrained(model_dir)
    assert resumed.data["step"] == 4
    changed = [not torch.equal(a, b)
               for a, b in zip(first.net.parameters(), resumed.net.parameters(), strict=True)]
    assert any(changed)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert [r["end_step"] for r in summary["runs"]] == [2, 4]
    warm = train_atom_diffusion(tiny_set, tmp_path / "warm", config=cfg, max_steps=1, accelerator="cpu",
                                progress=False, init=model_dir)
    assert AtomDiffusionModel.from_pretrained(warm).data["init"]["step"] == 4
    again = train_atom_diffusion(tiny_set, tmp_path / "again", config=cfg, max_steps=1, accelerator="cpu",
                                 progress=False, init=warm)
    assert AtomDiffusionModel.from_pretrained(again).data["init"]["step"] == 5  # 4 behind warm + its 1


@pytest.mark.parametrize("first", [2, 3])  # stopped at the end of a pass of 2 batches, and inside one
def test_a_resumed_run_ends_with_the_weights_of_one_that_never_stopped(tiny_set, tmp_path, first):
    cfg = AtomTrainConfig.from_dict(TINY)
    straight = train_atom_diffusion(tiny_set, tmp_path / "straight", config=cfg, max_steps=5,
                                    accelerator="cpu", progress=False)
    train_atom_diffusion(tiny_set, tmp_path / "run", config=cfg, max_steps=first, accelerator="cpu",
                         progress=False)
    resumed = train_atom_diffusion(tiny_set, tmp_path / "run", resume=True, max_steps=5,
                                   accelerator="cpu", progress=False)
    a, b = (AtomDiffusionModel.from_pretrained(d).net.state_dict() for d in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_a_model_of_smaller_crystals_takes_the_new_data_s_sizes(tiny_set, tmp_path):
    crystals = CrystalSet.load(tiny_set)
    small = crystals.subset(np.flatnonzero(crystals.num_sites <= 5)).save(tmp_path / "small.npz")
    cfg = AtomTrainConfig.from_dict(TINY)
    base_dir = train_atom_diffusion(small, tmp_path / "base", config=cfg, max_steps=1, accelerator="cpu",
                                    progress=False)
    base = AtomDiffusionModel.from_pretrained(base_dir)
    assert base.spec.max_atoms == 5
    warm = AtomDiffusionModel.from_pretrained(train_atom_diffusion(
        tiny_set, tmp_path / "warm", config=cfg, max_steps=1, accelerator="cpu", progress=False,
        init=base_dir))
    assert warm.spec.max_atoms == 8 and warm.spec.num_atoms_counts[8] == 1  # NaCl's conventional cell
    assert warm.spec.lattice_mean == base.spec.lattice_mean  # the encoding the weights know
    assert warm.sample_sets(2, steps=2, seed=0).mask.shape == (2, 8)


def test_a_cholesky_coded_run_trains_samples_and_keeps_its_code_for_init(tiny_set, tmp_path):
    cfg = AtomTrainConfig.from_dict(TINY | {"data": {"lattice_code": "cholesky"}})
    model_dir = train_atom_diffusion(tiny_set, tmp_path / "run", config=cfg, max_steps=2, accelerator="cpu",
                                     progress=False)
    model = AtomDiffusionModel.from_pretrained(model_dir)
    assert model.spec.lattice_code == "cholesky"
    raw = model.spec.lattice_mean
    assert all(abs(v) <= 0.5 for v in raw[3:])  # the mean shears of Niggli cells, not angles (~1.6 rad)
    made = model.generate(4, steps=2, seed=0)  # the sampler runs on the code (2 steps: no cells yet)
    assert len(made.crystals) + len(made.failures) == 4
    with pytest.raises(CrysgenError, match="encodes lattices as 'cholesky'"):
        train_atom_diffusion(tiny_set, tmp_path / "warm", config=AtomTrainConfig.from_dict(TINY), max_steps=1,
                             accelerator="cpu", progress=False, init=model_dir)
    with pytest.raises(CrysgenError, match="unknown lattice code"):
        AtomTrainConfig.from_dict(TINY | {"data": {"lattice_code": "matrix"}})


def test_bad_configs_are_refused(tiny_set, tmp_path):
    with pytest.raises(CrysgenError, match="unknown key"):
        AtomTrainConfig.from_dict({"net": {"width": 3}})
    with pytest.raises(CrysgenError, match="csp_fraction"):
        AtomTrainConfig.from_dict({"edm": {"csp_fraction": 2}})
    with pytest.raises(CrysgenError, match="more than 4 sites"):
        train_atom_diffusion(tiny_set, tmp_path / "r", config=AtomTrainConfig.from_dict(
            TINY | {"data": {"max_atoms": 4}}), accelerator="cpu", progress=False)


def test_space_group_conditioned_training_runs(tiny_set, tmp_path):
    cfg = AtomTrainConfig.from_dict(TINY | {"net": TINY["net"] | {"space_groups": True}})
    model_dir = train_atom_diffusion(tiny_set, tmp_path / "run", config=cfg, max_steps=2, accelerator="cpu",
                                     progress=False)
    model = AtomDiffusionModel.from_pretrained(model_dir)
    assert model.net.cfg.space_groups and model.net.space_group is not None
    sets = model.sample_sets(2, steps=2, space_group=225, guidance=2.0)
    assert sets.frac.shape == (2, 8, 3)


def _switched_on(tiny_set, tmp_path, **net):
    """A one-step model, and its two-step continuation (`--init`) with the network options ``net``."""
    base = train_atom_diffusion(tiny_set, tmp_path / "base", config=AtomTrainConfig.from_dict(TINY),
                                max_steps=1, accelerator="cpu", progress=False)
    switched = AtomTrainConfig.from_dict(TINY | {"net": TINY["net"] | net})
    warm = train_atom_diffusion(tiny_set, tmp_path / "warm", config=switched, max_steps=2, accelerator="cpu",
                                progress=False, init=base)
    return base, warm


def test_init_may_switch_on_space_groups_only(tiny_set, tmp_path):
    base, warm = _switched_on(tiny_set, tmp_path, space_groups=True)
    assert AtomDiffusionModel.from_pretrained(warm).net.cfg.space_groups
    dropped = AtomTrainConfig.from_dict(TINY | {"net": TINY["net"] | {"dropout": 0.1}})
    again = train_atom_diffusion(tiny_set, tmp_path / "drop", config=dropped, max_steps=1, accelerator="cpu",
                                 progress=False, init=base)  # dropout changes no weight: free under --init
    assert AtomDiffusionModel.from_pretrained(again).net.cfg.dropout == 0.1
    wider = AtomTrainConfig.from_dict(TINY | {"net": TINY["net"] | {"d_model": 64}})
    with pytest.raises(CrysgenError, match="differs"):
        train_atom_diffusion(tiny_set, tmp_path / "w", config=wider, max_steps=1, accelerator="cpu",
                             progress=False, init=base)


def test_compile_takes_a_mode_and_refuses_others():
    assert AtomTrainConfig.from_dict({}).compile_mode is None
    assert AtomTrainConfig.from_dict({"compile": True}).compile_mode == "default"
    cfg = AtomTrainConfig.from_dict({"compile": "reduce-overhead"})
    assert cfg.compile_mode == "reduce-overhead" and cfg.to_dict()["compile"] == "reduce-overhead"
    with pytest.raises(CrysgenError, match="compile: 'fast'"):
        AtomTrainConfig.from_dict({"compile": "fast"})


@pytest.mark.slow
def test_compiled_training_forward_gives_the_eager_loss(tiny_set):
    from dataclasses import asdict

    from crysgen.objectives.atom_edm import Parts, edm_loss
    from crysgen.representations.atoms import AtomSetSpec, encode
    from crysgen.training.atoms import AtomDiffusionModule

    crystals = CrystalSet.load(tiny_set)
    spec = AtomSetSpec.fit(crystals)
    sets = encode(crystals, spec)
    batch = Parts(*(torch.from_numpy(a) for a in (sets.types, sets.frac, sets.lattice)))
    mask = torch.from_numpy(sets.mask)
    losses = []
    for mode in (False, True):
        torch.manual_seed(0)
        config = AtomTrainConfig.from_dict(TINY | {"compile": mode})
        module = AtomDiffusionModule(config.to_dict(), asdict(spec))
        assert (module._forward is module.net) == (mode is False)
        loss, _ = edm_loss(module._forward, batch, mask, module.cfg.edm, module.consts,
                           generator=torch.Generator().manual_seed(1))
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_pair_messages_can_be_switched_on_for_a_trained_network(tiny_set, tmp_path):
    _, warm = _switched_on(tiny_set, tmp_path, pair_messages=True, message_width=8)
    model = AtomDiffusionModel.from_pretrained(warm)
    assert model.net.cfg.pair_messages
    assert all(b.msg.out.weight.abs().sum() > 0 for b in model.net.blocks)  # trained from zero
    assert all(b.msg.out.weight.shape[1] == 8 for b in model.net.blocks)  # the width asked for
    # once the messages exist, their width is part of the weights: --init may not change it
    wider = AtomTrainConfig.from_dict(TINY | {"net": TINY["net"] | {"pair_messages": True,
                                                                     "message_width": 16}})
    with pytest.raises(CrysgenError, match="differs"):
        train_atom_diffusion(tiny_set, tmp_path / "w", config=wider, max_steps=1, accelerator="cpu",
                             progress=False, init=warm)


def test_a_displacement_head_can_be_switched_on_for_a_trained_network(tiny_set, tmp_path):
    _, warm = _switched_on(tiny_set, tmp_path, displacement_head=True, head_width=8)
    net = AtomDiffusionModel.from_pretrained(warm).net
    assert net.displace is not None and net.displace.src.weight.shape[0] == 8  # the width asked for
    assert net.displace.out.weight.abs().sum() > 0  # trained from zero


def test_a_site_count_embedding_can_be_switched_on_for_a_trained_network(tiny_set, tmp_path):
    _, warm = _switched_on(tiny_set, tmp_path, num_sites=True)
    net = AtomDiffusionModel.from_pretrained(warm).net
    counts = CrystalSet.load(tiny_set).num_sites.astype(int)
    moved = set(np.flatnonzero(net.num_sites.weight.detach().abs().sum(1).numpy() > 0))
    assert moved and moved <= set(counts.tolist())  # trained from zero, only at counts the data holds


def test_init_may_raise_the_fourier_frequencies_but_not_lower_them(tiny_set, tmp_path):
    _, warm = _switched_on(tiny_set, tmp_path, n_freqs=12, edge_freqs=10)
    net = AtomDiffusionModel.from_pretrained(warm).net
    assert (net.cfg.n_freqs, net.cfg.edge_freqs) == (12, 10)
    assert net.coord_in.weight.shape[1] == 6 * 12
    fewer = AtomTrainConfig.from_dict(TINY | {"net": TINY["net"] | {"n_freqs": 12, "edge_freqs": 3}})
    with pytest.raises(CrysgenError, match="raised"):
        train_atom_diffusion(tiny_set, tmp_path / "f", config=fewer, max_steps=1, accelerator="cpu",
                             progress=False, init=warm)


def test_init_may_drop_blocks_or_add_them(tiny_set, tmp_path):
    deep = AtomTrainConfig.from_dict(TINY | {"net": TINY["net"] | {"n_layers": 3}})
    base = train_atom_diffusion(tiny_set, tmp_path / "deep", config=deep, max_steps=1, accelerator="cpu",
                                progress=False)
    shallow = AtomTrainConfig.from_dict(TINY | {"net": TINY["net"] | {"n_layers": 2}})
    warm = train_atom_diffusion(tiny_set, tmp_path / "shallow", config=shallow, max_steps=1,
                                accelerator="cpu", progress=False, init=base)
    net = AtomDiffusionModel.from_pretrained(warm).net
    assert len(net.blocks) == 2 and net.edge[2].out_features == 2 * net.cfg.n_heads
    # the embeddings came from the deep model (one step of training moves them only a little)
    start = AtomDiffusionModel.from_pretrained(base).net
    assert torch.allclose(net.type_in.weight, start.type_in.weight, atol=0.05)
    deeper = AtomTrainConfig.from_dict(TINY | {"net": TINY["net"] | {"n_layers": 5}})
    grown = train_atom_diffusion(tiny_set, tmp_path / "deeper", config=deeper, max_steps=1, accelerator="cpu",
                                 progress=False, init=base)
    net = AtomDiffusionModel.from_pretrained(grown).net
    assert len(net.blocks) == 5 and net.edge[2].out_features == 5 * net.cfg.n_heads
    # the deep model's last block is the grown one's last, one step of training apart
    assert torch.allclose(net.blocks[4].qkv.weight, start.blocks[2].qkv.weight, atol=0.05)
    assert not torch.allclose(net.blocks[3].qkv.weight, start.blocks[2].qkv.weight, atol=0.05)


def test_element_count_conditioning_can_be_switched_on_and_conditions_sampling(tiny_set, tmp_path):
    import numpy as np

    from crysgen.representations.atoms import num_elements

    plain, warm = _switched_on(tiny_set, tmp_path, num_elements=True)
    with pytest.raises(CrysgenError, match="may be switched on"):  # but not off again
        train_atom_diffusion(tiny_set, tmp_path / "off", config=AtomTrainConfig.from_dict(TINY), max_steps=1,
                             accelerator="cpu", progress=False, init=warm)
    model = AtomDiffusionModel.from_pretrained(warm)
    assert model.net.cfg.num_elements and np.array(model.spec.size_counts).sum() == 4
    assert model.net.num_elements.weight[1:].abs().sum() > 0  # trained from zero: the counts reached it
    seen = []
    forward = model.net.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["num_elements"])
        return forward(*args, **kwargs)

    model.net.forward = spy
    sets = model.sample_sets(6, steps=1, seed=2)
    num, elements = model.draw_sizes(6, seed=[2, 1])
    assert all(np.array(model.spec.size_counts)[num, elements] > 0)  # only pairs seen in training
    assert sets.mask.sum(1).tolist() == num.tolist()
    assert sorted(torch.cat(seen).tolist()) == sorted(elements.tolist())
    seen.clear()
    z = CrystalSet.load(tiny_set).atomic_numbers[:, :model.spec.max_atoms]
    model.sample_sets(len(z), steps=1, atomic_numbers=z)  # composition given: its count is used
    assert sorted(torch.cat(seen).tolist()) == sorted(num_elements(z).tolist())
    # decoding holds each de novo sample to the count it was conditioned on when asked to
    model.net.forward = forward
    n = 24
    sets = model.sample_sets(n, steps=1, seed=3)
    elements = sets.num_elements
    assert elements.tolist() == model.draw_sizes(n, seed=[3, 1])[1].tolist()
    # element codes scattered over the table, as a poorly trained model makes them
    noise = np.random.default_rng(0).normal(0, 1, sets.types.shape).astype(np.float32)
    scattered = replace(sets, types=noise)
    model.sample_sets = lambda *args, **kwargs: scattered
    limited = model.generate(n, steps=1, seed=3, limit_element_count=True)
    free = model.generate(n, steps=1, seed=3)
    made = num_elements(limited.crystals.atomic_numbers)
    assert (made <= elements[limited.index]).all()
    assert (num_elements(free.crystals.atomic_numbers) > elements[free.index]).any()
    from crysgen.pipelines.protocol import SampleOptions

    with pytest.raises(CrysgenError, match="limit-element-count"):
        AtomDiffusionModel.from_pretrained(plain).prepare(SampleOptions(n=1, limit_element_count=True))


def test_export_of_a_checkpoint_is_the_run_s_own_export_at_that_step(tiny_set, tmp_path):
    import shutil

    from crysgen.cli import main

    run = tmp_path / "run"
    cfg = AtomTrainConfig.from_dict(TINY)
    shutil.copytree(train_atom_diffusion(tiny_set, run, config=cfg, max_steps=2, accelerator="cpu",
                                         progress=False), tmp_path / "own2")
    train_atom_diffusion(tiny_set, run, resume=True, max_steps=4, accelerator="cpu", progress=False)
    assert main(["model", "export", str(run), "--step", "2", "--out", str(tmp_path / "at2")]) == 0
    own, at2 = (AtomDiffusionModel.from_pretrained(tmp_path / d) for d in ("own2", "at2"))
    last = AtomDiffusionModel.from_pretrained(run / "model")
    assert at2.data["step"] == 2 and at2.data["sha256"] == own.data["sha256"] and at2.spec == own.spec
    for (k, a), b in zip(own.net.state_dict().items(), at2.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)  # the EMA weights of step 2, not those of step 4
    assert any(not torch.equal(a, c) for a, c in zip(own.net.state_dict().values(),
                                                     last.net.state_dict().values(), strict=True))
    assert main(["model", "export", str(run), "--step", "3", "--out", str(tmp_path / "x")]) == 2
    assert main(["model", "export", str(tmp_path), "--out", str(tmp_path / "y")]) == 2  # not a run


def test_permute_axes_reorders_the_training_batch_only_when_asked(tiny_set, monkeypatch):
    from dataclasses import asdict

    import crysgen.training.atoms as ta
    from crysgen.representations.atoms import AtomSetSpec

    seen = []

    def fake_loss(forward, x0, mask, *args, **kwargs):
        seen.append((x0.frac.clone(), x0.lattice.clone()))
        return torch.tensor(0.0), {}

    monkeypatch.setattr(ta, "edm_loss", fake_loss)
    cs = CrystalSet.load(tiny_set)
    spec = AtomSetSpec.fit(cs)
    batch = next(iter(ta.atom_loader(cs, spec, 4, shuffle=False)))
    for flag in (False, True):
        cfg = AtomTrainConfig.from_dict(TINY | {"data": {"permute_axes": flag, "translate": False}})
        module = ta.AtomDiffusionModule(cfg.to_dict(), asdict(spec))
        module.log = module.log_dict = lambda *a, **k: None  # no trainer to log to
        torch.manual_seed(0)
        module.training_step(batch, 0)
    (frac_off, lat_off), (frac_on, lat_on) = seen
    assert torch.equal(frac_off, batch[1]) and torch.equal(lat_off, batch[2])
    assert not torch.equal(lat_on, batch[2]) and not torch.equal(frac_on, batch[1])


def test_a_warm_start_with_empty_sites_keeps_the_setting_and_samples_with_it(tiny_set, tmp_path):
    plain = train_atom_diffusion(tiny_set, tmp_path / "a", config=AtomTrainConfig.from_dict(TINY),
                                 max_steps=2, accelerator="cpu", progress=False)
    cfg = AtomTrainConfig.from_dict(TINY | {"edm": {"empty_sites": 2}})
    warm = train_atom_diffusion(tiny_set, tmp_path / "b", config=cfg, max_steps=2, accelerator="cpu",
                                progress=False, init=plain, val=tiny_set)
    model = AtomDiffusionModel.from_pretrained(warm)
    assert model.edm.empty_sites == 2
    sets = model.sample_sets(6, steps=2, seed=0)
    assert sets.mask.shape[1] == model.spec.max_atoms + 2
