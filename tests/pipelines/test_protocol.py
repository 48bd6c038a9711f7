"""The Generator protocol: every model kind meets it, and it is all that `sample_to_dir` uses."""

from __future__ import annotations

import csv
import inspect

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.pipelines.compositions import Compositions
from crysgen.pipelines.generators import load_generator
from crysgen.pipelines.protocol import Generator, SampleOptions
from crysgen.pipelines.sampling import sample_to_dir
from crysgen.representations.crystens import DIAGNOSTICS, DecodeOptions, DecodeResult
from crysgen.representations.crystens.decode import DecodeFailure
from crysgen.representations.watershed import WatershedOptions
from tests.conftest import load_cif

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KINDS = ("diffusion", "cascade", "gan", "wgan", "voxel_vae", "atom_diffusion")
CRYSTENS = ("diffusion", "cascade", "gan", "wgan")


@pytest.fixture(scope="module")
def crystals() -> CrystalSet:
    return CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], ids=["NaCl", "SrTiO3"],
                                      max_sites=52)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, crystals):
    """A tiny untrained model directory of every kind `load_generator` knows."""
    from crysgen.models.adversarial import AdversarialNetConfig, build_generator
    from crysgen.models.atom_transformer import AtomTransformer
    from crysgen.models.unet2d import UNetConfig
    from crysgen.models.unet3d import UNet3D
    from crysgen.models.voxel_vae import VoxelVAE
    from crysgen.objectives.atom_edm import AtomEDMConfig
    from crysgen.objectives.cascade import StageConfig
    from crysgen.objectives.diffusion import DiffusionConfig
    from crysgen.pipelines.adversarial import AdversarialModel
    from crysgen.pipelines.atoms import AtomDiffusionModel
    from crysgen.pipelines.cascade import CascadeModel
    from crysgen.pipelines.diffusion import DiffusionModel
    from crysgen.pipelines.voxel import VoxelModel, VoxelSpec
    from crysgen.representations.atoms import AtomSetSpec
    from crysgen.representations.crystens import CrysTensScaling
    from crysgen.representations.voxel import VoxelConfig

    tmp = tmp_path_factory.mktemp("kinds")
    torch.manual_seed(0)
    scaling = CrysTensScaling.fit(crystals)
    small = {"block_out_channels": (8, 16), "attention": (False, True), "norm_num_groups": 4,
             "layers_per_block": 1}
    models = {
        "diffusion": DiffusionModel.create(UNetConfig(**small), DiffusionConfig(), scaling, {"name": "t"}),
        "cascade": CascadeModel(
            DiffusionModel.create(UNetConfig(sample_size=32, **small), DiffusionConfig(), scaling,
                                  {"name": "t"}, StageConfig(role="base")),
            DiffusionModel.create(UNetConfig(cond_channels=4, **small), DiffusionConfig(), scaling,
                                  {"name": "t"}, StageConfig(role="sr")), 0.1),
        "voxel_vae": VoxelModel(VoxelVAE(grid=16, width=0.25).eval(), UNet3D(width=0.125).eval(),
                                VoxelSpec(VoxelConfig(grid=16), "x", list(map(float, range(9))), [1.0] * 95),
                                {"name": "t"}),
        "atom_diffusion": AtomDiffusionModel(
            AtomTransformer(type_dim=39, d_model=32, n_layers=2, n_heads=4, edge_hidden=16).eval(),
            AtomEDMConfig(), AtomSetSpec.fit(crystals, max_atoms=30), {"name": "t"}),
    }
    for kind in ("gan", "wgan"):
        net = AdversarialNetConfig(kind=kind, width=0.125)
        models[kind] = AdversarialModel(build_generator(net).eval(), net, scaling, {"name": "t"})
    paths = {kind: model.save_pretrained(tmp / kind, half=False) for kind, model in models.items()}
    crystals.save(tmp / "targets.npz")
    return paths


def _protocol_members() -> dict[str, object]:
    return {name: value for name, value in vars(Generator).items()
            if not name.startswith("_") and (callable(value) or isinstance(value, property))}


def _rows(folder):
    with (folder / "samples.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_meets_the_protocol(model_dirs, kind):
    """What mypy proves for load_generator, and that each member does its job for every kind."""
    model = load_generator(model_dirs[kind])
    members = _protocol_members()
    assert set(members) == {"kind", "data", "default_batch_size", "compositions_from_formula",
                            "compositions_from_targets", "compositions_from_prior", "prepare", "generate"}
    for name, member in members.items():
        assert hasattr(model, name), name
        if callable(member):  # every parameter of the protocol's method is taken
            want = inspect.signature(member).parameters
            have = inspect.signature(getattr(model, name)).parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in have.values())
            assert all(p in have or takes_any for p in want if p != "self"), name
    assert model.kind == kind and model.data == {"name": "t"}
    assert model.default_batch_size("cuda") == 256
    assert model.default_batch_size("cpu") == (64 if kind == "atom_diffusion" else 16)

    options = SampleOptions(n=3, steps=2, seed=5)
    kwargs = model.prepare(options)
    batches, tensors = [], []
    res = model.generate(3, seed=[5, 0], batch_size=2, ids=["a", "b", "c"], decode=DecodeOptions(),
                         on_batch=batches.append, on_tensors=tensors.append, **kwargs)
    assert isinstance(res, DecodeResult) and sum(batches) == 3
    assert sorted([*res.index.tolist(), *(f.index for f in res.failures)]) == [0, 1, 2]
    assert set(res.diagnostics) == set(DIAGNOSTICS) and all(len(v) == 3 for v in res.diagnostics.values())
    if kind in CRYSTENS:  # the raw tensors are the model's own sample at the same seed and steps
        assert len(tensors) == 1
        np.testing.assert_array_equal(tensors[0], model.sample(3, seed=[5, 0], steps=2, batch_size=2))
    else:
        assert tensors == []


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("diffusion", SampleOptions(n=2, condition=3), "voxel VAE models only"),
    ("cascade", SampleOptions(n=2, space_group=225), "atom diffusion models only"),
    ("gan", SampleOptions(n=2, prior="posterior"), "voxel VAE models only"),
    ("wgan", SampleOptions(n=2, churn=1.0), "atom diffusion models only"),
    ("voxel_vae", SampleOptions(n=2, churn=1.0), "atom diffusion models only"),
    ("diffusion", SampleOptions(n=2, limit_element_count=True), "atom diffusion models only"),
    ("atom_diffusion", SampleOptions(n=2, limit_element_count=True), "conditioned on the number of elements"),
    ("voxel_vae", SampleOptions(n=2, around="a.cif", interpolate=("a.cif", "b.cif")), "exclude each other"),
    ("voxel_vae", SampleOptions(n=2, prior="posterior"), r"no latent_prior\.npz"),
    ("atom_diffusion", SampleOptions(n=2, interpolate=("a.cif", "b.cif")), "voxel VAE models only"),
    ("diffusion", SampleOptions(n=2, merge_tol=1.2), "voxel VAE models only"),
    ("atom_diffusion", SampleOptions(n=2, space_group=225), "without space-group"),
])
def test_each_model_refuses_the_options_it_does_not_take(model_dirs, kind, options, message):
    with pytest.raises(CrysgenError, match=message):
        load_generator(model_dirs[kind]).prepare(options)


@pytest.mark.parametrize("kind", ["cascade", "gan", "wgan", "voxel_vae"])
def test_models_without_composition_control_refuse_compositions(model_dirs, crystals, kind):
    model = load_generator(model_dirs[kind])
    message = f"need a model with composition control .*; this is a {kind} model"
    with pytest.raises(CrysgenError, match=message):
        model.compositions_from_formula("NaCl", 2)
    with pytest.raises(CrysgenError, match=message):
        model.compositions_from_targets(crystals)
    with pytest.raises(CrysgenError, match=message):
        model.compositions_from_prior(crystals, 2)
    given = Compositions(np.zeros((2, 52), np.int64), ["", ""])
    with pytest.raises(CrysgenError, match=message):
        model.generate(2, compositions=given, **model.prepare(SampleOptions(n=2, steps=1)))


@pytest.mark.parametrize("kind", ["diffusion", "atom_diffusion"])
def test_models_with_composition_control_make_them(model_dirs, crystals, kind):
    model = load_generator(model_dirs[kind])
    comps = model.compositions_from_formula("NaCl", 3, num_atoms=4)
    assert (comps.atomic_numbers > 0).sum(1).tolist() == [4, 4, 4] and comps.targets == ["NaCl"] * 3
    assert model.compositions_from_targets(crystals, 2).targets == ["NaCl", "NaCl", "SrTiO3", "SrTiO3"]
    drawn, counts = model.compositions_from_prior(crystals, 5, seed=1)
    wanted = {tuple(sorted(r[r > 0])) for r in crystals.atomic_numbers}
    assert {tuple(sorted(r[r > 0])) for r in drawn.atomic_numbers} <= wanted and drawn.targets == [""] * 5
    assert counts == {"drawn": 5, "substituted": 0, "by_common_states": 0}


def test_prepare_hands_each_model_its_own_options(model_dirs):
    atoms = load_generator(model_dirs["atom_diffusion"])
    assert atoms.prepare(SampleOptions(n=2, steps=7, guidance=2.0, churn=3.0, sampler="dpmsolver")) == {
        "steps": 7, "space_group": None, "guidance": 2.0, "churn": 3.0, "anneal_rho": 0.0,
        "anneal_rho_lattice": None, "limit_element_count": False, "templates": None, "precision": "fp32",
        "template_start": None, "restart": None, "repair": None, "lattices": None}
    assert atoms.prepare(SampleOptions(n=2, anneal_rho=4.0))["anneal_rho"] == 4.0
    assert atoms.prepare(SampleOptions(n=2, restart=(0.1, 5, 2)))["restart"] == (0.1, 5, 2)
    assert atoms.prepare(SampleOptions(n=2, repair="0.3:20:3"))["repair"] == (0.3, 20, 3)
    for kind in CRYSTENS:
        assert load_generator(model_dirs[kind]).prepare(SampleOptions(n=2, steps=7, sampler="dpmsolver")) == {
            "steps": 7, "sampler": "dpmsolver"}
    voxel = load_generator(model_dirs["voxel_vae"])
    targets = model_dirs["voxel_vae"].parent / "targets.npz"
    pair = (f"{targets}:NaCl", f"{targets}:SrTiO3")
    kwargs = voxel.prepare(SampleOptions(n=4, condition=2, interpolate=pair))
    mu_a, mu_b = (voxel.base(ref, 2)[0] for ref in pair)
    line = kwargs.pop("line")
    np.testing.assert_array_equal(line[0], mu_a)
    np.testing.assert_array_equal(line[1], mu_b)
    assert kwargs == {"condition": 2, "sigma2": 0.5, "prior": "standard", "total": 4,
                      "merge_tol": WatershedOptions().merge_tol}  # a spec without its own
    assert not np.allclose(mu_a, mu_b)


@pytest.mark.parametrize("kind", ["diffusion", "cascade", "wgan"])
def test_sample_to_dir_draws_chunk_k_of_a_crystens_model_from_seed_seed_k(model_dirs, tmp_path, kind):
    """The saved tensors of every chunk are the model's own sample at [seed, k] (pinned by goldens)."""
    opts = SampleOptions(n=3, steps=2, seed=5, chunk_size=2, save_tensors=True, sampler="dpmsolver")
    sample_to_dir(model_dirs[kind], tmp_path / "s", opts, progress=False, batch_size=2)
    model = load_generator(model_dirs[kind])
    for k, size in enumerate((2, 1)):
        with np.load(tmp_path / "s" / "chunks" / f"chunk_{k:05d}.npz") as f:
            saved = f["tensors"]
        np.testing.assert_array_equal(saved, model.sample(size, seed=[5, k], steps=2, sampler="dpmsolver",
                                                          batch_size=2))


class FakeGenerator:
    """The Generator protocol and nothing else: NaCl and SrTiO3 by turns, every third a failure."""

    def __init__(self, crystals: CrystalSet) -> None:
        self.crystals = crystals
        self.prepared: list[tuple[SampleOptions, str]] = []
        self.calls: list[dict] = []

    @property
    def kind(self) -> str:
        return "fake"

    @property
    def data(self) -> dict:
        return {}

    def default_batch_size(self, device: str) -> int:
        return 7

    def compositions_from_formula(self, formula: str, n: int, *, num_atoms: int | None = None,
                                  seed: int | list[int] = 0) -> Compositions:
        assert seed == [11, 2]
        return Compositions(np.zeros((n, 52), np.int64), [f"{formula}-{i}" for i in range(n)])

    def compositions_from_targets(self, targets: CrystalSet, per_target: int = 1) -> Compositions:
        raise AssertionError("not asked for")

    def prepare(self, options: SampleOptions, *, device: str = "cpu", compositions=None) -> dict:
        self.prepared.append((options, device))
        return {"marker": options.steps * 10}

    def generate(self, n, *, seed=0, device="cpu", batch_size=256, ids=None, compositions=None, offset=0,
                 workers=1, decode=None, on_batch=None, on_tensors=None, **options) -> DecodeResult:
        self.calls.append({"n": n, "seed": seed, "batch_size": batch_size, "ids": ids, "offset": offset,
                           "targets": compositions.targets[offset:offset + n], "decode": decode,
                           "options": options})
        which = [(offset + i) % 2 for i in range(n)]
        ok = [i for i in range(n) if (offset + i) % 3 != 2]
        crystals = self.crystals.subset(np.array([which[i] for i in ok], int))
        crystals.ids = np.array([ids[i] for i in ok])
        diagnostics = {k: np.full(n, float(offset)) for k in DIAGNOSTICS}
        failures = [DecodeFailure(i, f"fake_failure: sample {offset + i}") for i in range(n) if i not in ok]
        if on_tensors is not None:
            on_tensors(np.full((n, 4, 2, 2), offset, np.float32))
        on_batch(n)
        return DecodeResult(crystals, np.array(ok, np.int64), diagnostics, failures)


def test_sample_to_dir_needs_nothing_but_the_protocol(crystals, tmp_path, monkeypatch):
    import crysgen.pipelines.generators

    fake = FakeGenerator(crystals)
    monkeypatch.setattr(crysgen.pipelines.generators, "load_generator", lambda path: fake)
    opts = SampleOptions(n=5, steps=3, seed=11, chunk_size=2, formula="NaCl", save_tensors=True,
                         decode_mode="faithful")
    summary = sample_to_dir(tmp_path / "fake_model", tmp_path / "s", opts, progress=False)
    assert fake.prepared == [(opts, "cpu")]
    assert [c["n"] for c in fake.calls] == [2, 2, 1]
    assert [c["seed"] for c in fake.calls] == [[11, 0], [11, 1], [11, 2]]
    assert [c["offset"] for c in fake.calls] == [0, 2, 4]
    assert fake.calls[2]["ids"] == ["sample_000004"] and fake.calls[2]["targets"] == ["NaCl-4"]
    assert all(c["batch_size"] == 7 and c["options"] == {"marker": 30} for c in fake.calls)
    assert all(c["decode"] == DecodeOptions(mode="faithful") for c in fake.calls)
    rows = _rows(tmp_path / "s")
    assert [r["target"] for r in rows] == [f"NaCl-{i}" for i in range(5)]
    assert [r["formula"] for r in rows] == ["NaCl", "SrTiO3", "", "SrTiO3", "NaCl"]
    assert rows[2]["failure"] == "fake_failure: sample 2" and rows[2]["cif"] == ""
    assert [float(r["num_atoms"]) for r in rows] == [0, 0, 2, 2, 4]
    assert (tmp_path / "s" / "cifs" / "sample_000003.cif").is_file()
    assert summary.n == 5 and summary.decoded == 4 and summary.failure_reasons == {"fake_failure": 1}
    with np.load(tmp_path / "s" / "chunks" / "chunk_00002.npz") as f:
        assert f["tensors"].shape == (1, 4, 2, 2) and (f["tensors"] == 4).all()


def test_an_edm_model_refuses_ddpm_before_anything_is_written(crystals, tmp_path):
    from crysgen.models.unet2d import UNetConfig
    from crysgen.objectives.diffusion import DiffusionConfig
    from crysgen.pipelines.diffusion import DiffusionModel
    from crysgen.representations.crystens import CrysTensScaling

    cfg = UNetConfig(block_out_channels=(8, 16), attention=(False, True), norm_num_groups=4,
                     layers_per_block=1)
    path = DiffusionModel.create(cfg, DiffusionConfig(objective="edm"), CrysTensScaling.fit(crystals),
                                 {"name": "t"}).save_pretrained(tmp_path / "edm", half=False)
    with pytest.raises(CrysgenError, match="not ddpm"):
        sample_to_dir(path, tmp_path / "s", SampleOptions(n=2, sampler="ddpm"), progress=False)
    assert not (tmp_path / "s").exists()
