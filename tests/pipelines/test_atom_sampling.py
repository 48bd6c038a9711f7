from __future__ import annotations

import csv
import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from pymatgen.core import Composition

from crysgen import CrysgenError
from crysgen.cli import main
from crysgen.crystal_set import CrystalSet
from crysgen.data.structures import load_inputs
from crysgen.evaluation.validity import structurally_valid
from crysgen.models.atom_transformer import AtomTransformer
from crysgen.objectives.atom_edm import AtomEDMConfig, Constants, Parts
from crysgen.pipelines.atoms import (
    AtomDiffusionModel,
    InBf16,
    anneal_factors,
    crystal_noise,
    karras_sigmas,
    size_batches,
)
from crysgen.pipelines.collisions import colliding_sites
from crysgen.pipelines.compositions import Compositions
from crysgen.pipelines.generators import DEFAULT_MODEL
from crysgen.pipelines.sampling import SampleOptions, sample_to_dir
from crysgen.representations.atoms import AtomSetSpec, nearest_elements
from tests.conftest import load_cif

NAMES = ("NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO")


@pytest.fixture(scope="module")
def crystals() -> CrystalSet:
    return CrystalSet.from_structures([load_cif(n) for n in NAMES], ids=list(NAMES))


def _random_model(crystals, *, seed: int = 0, edm: AtomEDMConfig | None = None, **net_options):
    """A tiny untrained model of ``crystals`` (S = 30) whose samples vary with the noise."""
    torch.manual_seed(seed)
    net = AtomTransformer(type_dim=39, d_model=32, n_layers=2, n_heads=4, edge_hidden=16, **net_options)
    for p in net.parameters():  # a random (not zero-output) network: samples vary with the noise
        torch.nn.init.normal_(p, std=0.05)
    torch.nn.init.zeros_(net.lattice_out.weight)  # lattices shrink to the training mean: cells decode
    torch.nn.init.zeros_(net.lattice_out.bias)
    spec = AtomSetSpec.fit(crystals, max_atoms=30)
    return AtomDiffusionModel(net, edm or AtomEDMConfig(), spec, {"name": "t"})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, crystals):
    return _random_model(crystals).save_pretrained(tmp_path_factory.mktemp("m") / "model", half=False)


def _rows(folder):
    with (folder / "samples.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_formula_samples_have_exactly_that_composition(model_dir, tmp_path):
    sample_to_dir(model_dir, tmp_path / "s", SampleOptions(n=6, steps=6, formula="SrTiO3"), progress=False)
    rows = _rows(tmp_path / "s")
    assert len(rows) == 6 and all(r["target"] == "SrTiO3" for r in rows)
    decoded = [c.structure for c in load_inputs(tmp_path / "s") if c.structure is not None]
    assert decoded, "no sample decoded"
    for s in decoded:
        assert s.composition.reduced_formula == "SrTiO3" and len(s) % 5 == 0


def test_num_atoms_fixes_the_cell_size(model_dir, tmp_path):
    sample_to_dir(model_dir, tmp_path / "s", SampleOptions(n=3, steps=6, formula="NaCl", num_atoms=8),
                  progress=False)
    assert {r["num_sites"] for r in _rows(tmp_path / "s") if not r["failure"]} == {"8"}


def test_compositions_name_their_targets(model_dir, crystals, tmp_path):
    crystals.save(tmp_path / "t.npz")
    sample_to_dir(model_dir, tmp_path / "s", SampleOptions(n=8, steps=6, compositions=str(tmp_path / "t.npz"),
                                                           per_target=2), progress=False)
    rows = _rows(tmp_path / "s")
    assert [r["target"] for r in rows] == [n for n in NAMES for _ in range(2)]
    for r in rows:
        if not r["failure"]:
            want = crystals.to_structure(NAMES.index(r["target"])).composition.reduced_formula
            assert r["formula"] == want


def test_composition_prior_draws_known_compositions_and_substitute_makes_new_ones(model_dir, crystals,
                                                                                  tmp_path):
    crystals.save(tmp_path / "train.npz")
    known = {crystals.to_structure(i).composition.reduced_formula for i in range(len(crystals))}
    drawn = sample_to_dir(model_dir, tmp_path / "drawn", SampleOptions(
        n=8, steps=6, composition_prior=str(tmp_path / "train.npz")), progress=False)
    rows = _rows(tmp_path / "drawn")
    formulas = {r["formula"] for r in rows if not r["failure"]}
    assert len(formulas) > 1 and formulas <= known and all(r["target"] == "" for r in rows)
    assert drawn.composition_prior == {"drawn": 8, "substituted": 0, "by_common_states": 0}
    subst = sample_to_dir(model_dir, tmp_path / "subst", SampleOptions(
        n=8, steps=6, composition_prior=str(tmp_path / "train.npz"), substitute=True), progress=False)
    # every one of the four has a same-charge substitute among the model's elements (LiCl, ZnTiO3, ...)
    assert subst.composition_prior == {"drawn": 8, "substituted": 8, "by_common_states": 0}
    new = {r["formula"] for r in _rows(tmp_path / "subst") if not r["failure"]}
    assert new and not new & known
    spec = AtomDiffusionModel.from_pretrained(model_dir).spec
    assert all(el.Z in spec.elements for f in new for el in Composition(f))
    assert '"substituted": 8' in (tmp_path / "subst" / "summary.json").read_text()


def test_an_interrupted_composition_prior_run_resumes_to_the_same_crystals(model_dir, crystals, tmp_path):
    crystals.save(tmp_path / "train.npz")
    opts = SampleOptions(n=6, steps=4, chunk_size=2, seed=2, composition_prior=str(tmp_path / "train.npz"),
                         substitute=True)
    sample_to_dir(model_dir, tmp_path / "full", opts, progress=False)
    sample_to_dir(model_dir, tmp_path / "cut", opts, progress=False)
    (tmp_path / "cut" / "chunks" / "chunk_00002.csv").unlink()  # the draw is made again on resume
    (tmp_path / "cut" / "samples.csv").unlink()
    sample_to_dir(model_dir, tmp_path / "cut", opts, progress=False)
    assert (tmp_path / "cut" / "samples.csv").read_text() == (tmp_path / "full" / "samples.csv").read_text()


def test_substitute_mass_balanced_runs_from_the_cli_and_old_folders_resume(model_dir, crystals, tmp_path):
    import json

    crystals.save(tmp_path / "train.npz")
    rc = main(["sample", str(model_dir), "-n", "8", "--steps", "4", "--out", str(tmp_path / "mb"), "--quiet",
               "--composition-prior", str(tmp_path / "train.npz"), "--substitute", "mass-balanced"])
    assert rc == 0
    config = json.loads((tmp_path / "mb" / "sample_config.json").read_text())
    assert config["options"]["substitute"] == "mass-balanced"
    assert '"substituted": 8' in (tmp_path / "mb" / "summary.json").read_text()
    known = {crystals.to_structure(i).composition.reduced_formula for i in range(len(crystals))}
    plain = SampleOptions(n=8, steps=4, composition_prior=str(tmp_path / "train.npz"), substitute=True)
    assert plain.substitute == "probability"  # the option's boolean form, as older folders hold it
    sample_to_dir(model_dir, tmp_path / "p", plain, progress=False)
    for folder in ("mb", "p"):
        assert not {r["formula"] for r in _rows(tmp_path / folder) if not r["failure"]} & known
    # a folder written when the option was a flag resumes under its named draw
    config = json.loads((tmp_path / "p" / "sample_config.json").read_text())
    config["options"]["substitute"] = True
    (tmp_path / "p" / "sample_config.json").write_text(json.dumps(config))
    summary = sample_to_dir(model_dir, tmp_path / "p", plain, progress=False)
    assert summary.chunks_done_before == 1
    with pytest.raises(CrysgenError, match="--substitute must be one of probability, mass-balanced"):
        SampleOptions(n=2, substitute="heaviest")


def test_an_interrupted_run_resumes_to_the_same_crystals(model_dir, tmp_path):
    opts = SampleOptions(n=6, steps=6, chunk_size=2, seed=5)
    sample_to_dir(model_dir, tmp_path / "full", opts, progress=False)
    sample_to_dir(model_dir, tmp_path / "cut", opts, progress=False)
    (tmp_path / "cut" / "chunks" / "chunk_00001.csv").unlink()  # the run stopped in chunk 1
    (tmp_path / "cut" / "samples.csv").unlink()
    summary = sample_to_dir(model_dir, tmp_path / "cut", opts, progress=False)
    assert summary.chunks_done_before == 2
    assert (tmp_path / "cut" / "samples.csv").read_text() == (tmp_path / "full" / "samples.csv").read_text()
    for cif in (tmp_path / "full" / "cifs").glob("*.cif"):
        assert (tmp_path / "cut" / "cifs" / cif.name).read_text() == cif.read_text()
    formulas = {r["formula"] for r in _rows(tmp_path / "full")}
    assert len(formulas) > 1  # samples differ from each other (the noise reaches the output)


@pytest.fixture(scope="module")
def composition_model_dir(tmp_path_factory, crystals):
    """A tiny composition model fitted to NaCl and SrTiO3 cells (with Rb, which the atom model never saw)."""
    from crysgen.models.composition_lm import CompositionLM, CompositionModel
    from crysgen.training.compositions import train_composition_model
    from crysgen.training.config import CompositionTrainConfig

    folder = tmp_path_factory.mktemp("cm")
    crystals.subset(np.tile([0, 1], 40)).save(folder / "train.npz")
    config = CompositionTrainConfig(net={"d_model": 32, "layers": 1, "heads": 2, "dropout": 0.0}, epochs=25,
                                    batch_size=16, lr=3e-3)
    with torch.random.fork_rng():
        out = train_composition_model(folder / "train.npz", folder / "model", config=config, progress=False)
    model = CompositionModel.from_pretrained(out)
    CompositionModel(model.net, [*model.elements, 37], model.data).save_pretrained(out)
    assert isinstance(model.net, CompositionLM)
    return out


def test_a_composition_model_prior_gives_its_compositions_with_the_atom_models_elements(
        model_dir, composition_model_dir, tmp_path):
    opts = SampleOptions(n=16, steps=4, chunk_size=8, composition_prior=str(composition_model_dir))
    with pytest.warns(UserWarning, match="never saw Rb"):
        summary = sample_to_dir(model_dir, tmp_path / "s", opts, progress=False)
    assert summary.composition_prior == {"drawn": 16, "sampled": 16}
    formulas = [r["formula"] for r in _rows(tmp_path / "s") if not r["failure"]]
    assert len(formulas) >= 12 and all("Rb" not in f for f in formulas)
    assert sum(f in ("NaCl", "SrTiO3") for f in formulas) >= 0.75 * len(formulas)
    # resumable: a chunk made again draws the same compositions
    (tmp_path / "s" / "chunks" / "chunk_00001.csv").unlink()
    (tmp_path / "s" / "samples.csv").unlink()
    full = sample_to_dir(model_dir, tmp_path / "t", opts, progress=False)
    with pytest.warns(UserWarning, match="never saw Rb"):
        sample_to_dir(model_dir, tmp_path / "s", opts, progress=False)
    assert (tmp_path / "s" / "samples.csv").read_text() == (tmp_path / "t" / "samples.csv").read_text()
    assert full.n == 16
    # a folder of another composition model's compositions is not resumed
    import shutil

    other = tmp_path / "other_prior"
    shutil.copytree(composition_model_dir, other)
    opts_other = SampleOptions(n=16, steps=4, chunk_size=8, composition_prior=str(other))
    sample_to_dir(model_dir, tmp_path / "u", opts_other, progress=False)
    from crysgen.models.composition_lm import CompositionModel

    changed = CompositionModel.from_pretrained(other)
    torch.nn.init.normal_(changed.net.head.weight)
    changed.save_pretrained(other)
    with pytest.raises(CrysgenError, match="other weights"):
        sample_to_dir(model_dir, tmp_path / "u", opts_other, progress=False)


def test_the_bundled_composition_model_samples_from_the_cli(model_dir, tmp_path):
    rc = main(["sample", str(model_dir), "-n", "6", "--steps", "4", "--out", str(tmp_path / "b"), "--quiet",
               "--composition-prior", "bundled"])
    assert rc == 0
    spec = AtomDiffusionModel.from_pretrained(model_dir).spec
    rows = _rows(tmp_path / "b")
    assert len(rows) == 6
    assert all(el.Z in spec.elements for r in rows if not r["failure"] for el in Composition(r["formula"]))
    assert "composition_prior/weights.safetensors" in (tmp_path / "b" / "sample_config.json").read_text()


def test_substitute_with_a_composition_model_or_a_wrong_directory_gets_a_clear_error(
        model_dir, composition_model_dir, tmp_path, capsys):
    rc = main(["sample", str(model_dir), "-n", "2", "--out", str(tmp_path / "o"), "--quiet",
               "--composition-prior", str(composition_model_dir), "--substitute"])
    assert rc == 2 and "a composition model's are new already" in capsys.readouterr().err
    rc = main(["sample", str(model_dir), "-n", "2", "--out", str(tmp_path / "o"), "--quiet",
               "--composition-prior", str(model_dir)])
    assert rc == 2 and "not a composition model" in capsys.readouterr().err
    assert not (tmp_path / "o" / "samples.csv").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--formula", "Xx2O"], "Xx is not an element"),
    (["--formula", "Fe2O3", "--num-atoms", "7"], "not a multiple"),
    (["--formula", "Fe2O3", "--num-atoms", "35"], "not a multiple"),
    (["--num-atoms", "4"], "goes with --formula"),
    (["--churn", "-1"], "--churn must be 0"),
    (["--anneal-rho", "-2"], "--anneal-rho must be 0 (off) or positive"),
    (["--substitute"], "--substitute goes with --composition-prior"),
    (["--composition-prior", "absent.npz"], "--composition-prior: no such file: absent.npz"),
    (["--formula", "NaCl", "--composition-prior", "absent.npz"], "--formula and --composition-prior exclude"),
    (["--symmetry-prior", "absent.npz"], "--symmetry-prior: no such file: absent.npz"),
    (["--formula", "NaCl", "--cell", "4,4,4,90,90,90"], "--cell needs --formula and --num-atoms"),
    (["--formula", "NaCl", "--num-atoms", "2", "--cell", "4,4,-4,90,90,90"], "positive"),
    (["--formula", "NaCl", "--num-atoms", "2", "--cell", "4,4,4,90,90,180"], "between 0 and 180"),
    (["--formula", "NaCl", "--num-atoms", "2", "--cell", "4,4,4,30,30,90"], "no volume"),
])
def test_bad_composition_options_get_a_clear_error(model_dir, tmp_path, capsys, args, message):
    rc = main(["sample", str(model_dir), "-n", "2", "--out", str(tmp_path / "o"), "--quiet", *args])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o" / "samples.csv").exists()


def test_a_model_directory_after_substitute_gets_a_clear_error(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sample", "--composition-prior", "train.npz", "--substitute", str(model_dir), "-n", "2",
              "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--substitute: must be one of probability, mass-balanced" in err
    assert "give the model directory before the options" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("steps", "sigma_min", "sigma_max", "rho"),
                         [(10, 0.002, 80.0, 7.0), (50, 0.01, 5.0, 3.0)])
def test_karras_sigmas_are_diffusers_edm_schedule(steps, sigma_min, sigma_max, rho):
    from diffusers import EDMEulerScheduler

    sched = EDMEulerScheduler(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    sched.set_timesteps(steps)
    assert karras_sigmas(steps, sigma_min, sigma_max, rho) == sched.sigmas.to(torch.float64).tolist()


def test_churn_zero_is_the_deterministic_default_and_churn_changes_the_samples(model_dir):
    model = AtomDiffusionModel.from_pretrained(model_dir)
    assert model.edm.s_churn == 0
    base, zero, churned = (model.sample_sets(4, steps=4, seed=3, churn=c) for c in (None, 0.0, 40.0))
    np.testing.assert_array_equal(base.frac, zero.frac)
    assert np.abs(churned.frac - base.frac).max() > 1e-3


def test_anneal_factors_are_the_ratio_of_two_karras_schedules_steps_floored_at_one():
    steps, lo, hi = 4, 0.002, 80.0

    def levels(rho):  # Karras et al. 2022, eq. 5, by hand
        return [(hi ** (1 / rho) + i / (steps - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
                for i in range(steps)] + [0.0]

    base, alt = levels(7.0), levels(3.0)
    want = [max(1.0, (alt[i] - alt[i + 1]) / (base[i] - base[i + 1])) for i in range(steps)]
    got = anneal_factors(steps, lo, hi, 7.0, 3.0)
    assert got == pytest.approx(want, rel=1e-5)
    assert got[0] == 1.0 and got[1] > 1.5 and got[-1] == 1.0  # longer in the middle, not at the ends
    assert anneal_factors(steps, lo, hi, 7.0, 0.0) == [1.0] * steps
    assert anneal_factors(steps, lo, hi, 7.0, 7.0) == [1.0] * steps


def test_anti_annealing_never_moves_past_the_denoised_estimate(model_dir, monkeypatch):
    """Lengthened steps stop at the network's estimate: beyond that, a longer factor changes nothing.

    Uncapped, a factor of 1e6 would throw the lattice a million times past its estimate (few-step
    sampling with R = 4 reached 3.5x the way there and made clashing crystals).
    """
    import crysgen.pipelines.atoms as atoms

    model = AtomDiffusionModel.from_pretrained(model_dir)
    runs = []
    for factor in (1e6, 1e9):
        monkeypatch.setattr(atoms, "anneal_factors", lambda steps, *_, f=factor: [f] * steps)
        runs.append(model.sample_sets(3, steps=4, seed=2, anneal_rho=3.0))
    np.testing.assert_allclose(runs[0].lattice, runs[1].lattice, rtol=1e-5)
    np.testing.assert_allclose(runs[0].frac, runs[1].frac, atol=1e-5)
    assert np.isfinite(runs[0].lattice).all() and runs[0].lattice[:, :3].max() < 1e3


def test_anti_annealing_moves_coordinates_and_lattice_and_is_off_at_the_schedules_own_exponent(model_dir):
    model = AtomDiffusionModel.from_pretrained(model_dir)
    assert model.edm.anneal_rho == 0 and model.edm.rho == 7.0
    z = np.zeros((3, model.spec.max_atoms), np.int64)
    z[:, :2] = [11, 17]  # NaCl given: the element codes stay fixed, only geometry moves
    off, same, on = (model.sample_sets(3, steps=4, seed=2, atomic_numbers=z, anneal_rho=a)
                     for a in (None, 7.0, 3.0))
    np.testing.assert_array_equal(off.frac, same.frac)
    np.testing.assert_array_equal(off.lattice, same.lattice)
    assert np.abs(on.frac - off.frac).max() > 1e-3 and np.abs(on.lattice - off.lattice).max() > 1e-3
    np.testing.assert_array_equal(on.types, off.types)
    # the lattice's own exponent: off for the lattice, on for the coordinates
    coords_only, lattice_only = (model.sample_sets(3, steps=4, seed=2, atomic_numbers=z, anneal_rho=a,
                                                   anneal_rho_lattice=b) for a, b in ((3.0, 0.0), (0.0, 3.0)))
    assert np.abs(coords_only.frac - off.frac).max() > 1e-3
    assert np.abs(lattice_only.lattice - off.lattice).max() > 1e-3
    assert not np.allclose(coords_only.lattice, on.lattice) and not np.allclose(lattice_only.frac, on.frac)
    with pytest.raises(CrysgenError, match="--anneal-rho"):
        model.sample_sets(1, steps=2, anneal_rho=-1.0)
    with pytest.raises(CrysgenError, match="--anneal-rho-lattice"):
        model.sample_sets(1, steps=2, anneal_rho_lattice=-1.0)


def test_a_models_own_churn_is_its_default_and_is_recorded(model_dir, tmp_path):
    """A model whose config sets edm.s_churn samples with it unless --churn says otherwise, and
    sample_config.json records the churn that ran (not None)."""
    import json
    from dataclasses import replace

    base = AtomDiffusionModel.from_pretrained(model_dir)
    model = replace(base, edm=replace(base.edm, s_churn=20.0))
    assert model.prepare(SampleOptions(n=2))["churn"] == 20.0
    assert model.prepare(SampleOptions(n=2, churn=0.0))["churn"] == 0.0
    own, zero = (model.sample_sets(3, steps=4, seed=5, churn=c) for c in (None, 0.0))
    assert np.abs(own.frac - zero.frac).max() > 1e-3  # the model's churn was used
    path = model.save_pretrained(tmp_path / "m", half=False)
    for churn, want in ((None, 20.0), (0.0, 0.0)):
        out = tmp_path / f"s{churn}"
        sample_to_dir(path, out, SampleOptions(n=2, steps=2, churn=churn), progress=False)
        assert json.loads((out / "sample_config.json").read_text())["sampler"]["churn"] == want
    # a folder written before the sampler was recorded still resumes
    config = out / "sample_config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "sampler"}))
    sample_to_dir(path, out, SampleOptions(n=2, steps=2, churn=0.0), progress=False)


def test_bf16_runs_the_network_in_bf16_and_auto_picks_it_on_cuda_only(model_dir, tmp_path):
    import json

    model = AtomDiffusionModel.from_pretrained(model_dir)
    fp32, default, bf16 = (model.sample_sets(4, steps=4, seed=3, **kw)
                           for kw in ({"precision": "fp32"}, {}, {"precision": "bf16"}))
    np.testing.assert_array_equal(fp32.frac, default.frac)  # fp32 is the library call's default
    assert not np.array_equal(bf16.frac, fp32.frac)  # the option reaches the network
    # one network evaluation: bf16's rounding, not another network
    torch.manual_seed(0)
    b, s, mask = 3, 5, torch.ones(3, 5, dtype=torch.bool)
    args = (torch.randn(b, s, 39), torch.rand(b, s, 3), torch.randn(b, 6), mask, torch.zeros(b),
            torch.zeros(b, dtype=torch.bool), torch.eye(3).expand(b, 3, 3) * 4)
    with torch.no_grad():
        full, half = model.net(*args), InBf16(model.net, "cpu")(*args)
    for f, h in zip(full[:2], half[:2], strict=True):  # (the fixture's lattice output is zero)
        assert h.dtype == torch.bfloat16
        assert 0 < (h.float() - f).abs().max() <= 0.02 * f.abs().max()
    assert model.prepare(SampleOptions(n=2), device="cpu")["precision"] == "fp32"
    assert model.prepare(SampleOptions(n=2), device="cuda")["precision"] == "bf16"
    assert model.prepare(SampleOptions(n=2, precision="bf16"), device="cpu")["precision"] == "bf16"
    with pytest.raises(CrysgenError, match="precision"):
        model.sample_sets(2, steps=2, precision="fp16")
    with pytest.raises(CrysgenError, match="--precision must be one of auto, fp32, bf16"):
        SampleOptions(n=2, precision="fp16")
    out = tmp_path / "s"
    summary = sample_to_dir(model_dir, out, SampleOptions(n=2, steps=2, precision="bf16"), progress=False)
    assert json.loads((out / "sample_config.json").read_text())["sampler"]["precision"] == "bf16"
    assert summary.seconds_generating > 0 and summary.seconds_writing >= 0  # (no CIF when nothing decodes)
    assert summary.seconds_generating + summary.seconds_writing <= summary.seconds + 0.002  # (each rounded)
    # a folder written before --precision existed resumes (the option counts as its default there)
    out = tmp_path / "old"
    sample_to_dir(model_dir, out, SampleOptions(n=2, steps=2), progress=False)
    config = json.loads((out / "sample_config.json").read_text())
    del config["options"]["precision"]
    (out / "sample_config.json").write_text(json.dumps(config))
    assert sample_to_dir(model_dir, out, SampleOptions(n=2, steps=2), progress=False).chunks_done_before == 1
    with pytest.raises(CrysgenError, match=r"other sampler settings \(precision: fp32 there, bf16 now"):
        sample_to_dir(model_dir, out, SampleOptions(n=2, steps=2, precision="bf16"), progress=False)


def test_crystens_models_refuse_atom_only_options(tmp_path):
    from crysgen.pipelines.generators import CRYSTENS_MODEL

    for option in ({"space_group": 225}, {"anneal_rho": 4.0}, {"template_start": 0.02},
                   {"cell": (4.0, 4.0, 4.0, 90.0, 90.0, 90.0)}):
        with pytest.raises(CrysgenError, match="atom diffusion models only"):
            sample_to_dir(CRYSTENS_MODEL, tmp_path / "o", SampleOptions(n=2, **option), progress=False)


def test_bundled_model_samples_real_crystals(tmp_path):
    """16 CPU samples of the bundled model look like mp_20 crystals: few elements, no clashes.

    Noise in place of the network gives ~8 distinct elements per crystal (the site count drawn
    from mp_20, each site a random element) and overlapping atoms.
    """
    model = AtomDiffusionModel.from_pretrained(DEFAULT_MODEL)
    res = model.generate(16, steps=20, seed=0, batch_size=16)
    structures = [res.crystals.to_structure(i) for i in range(len(res.crystals))]
    valid = sum(structurally_valid(s) for s in structures)
    elements = np.median([len(s.composition.elements) for s in structures])
    assert valid >= 12 and elements <= 4, (valid, elements)


def test_bundled_model_anti_anneals_its_coordinates_not_its_lattice_by_default():
    """Its config.json sets the sampler default that benchmarks/results/*anneal4c* measured."""
    from crysgen.pipelines.generators import load_generator

    bundled = load_generator(DEFAULT_MODEL)
    kw = bundled.prepare(SampleOptions(n=2))
    assert (kw["anneal_rho"], kw["anneal_rho_lattice"]) == (4.0, 0.0)
    assert bundled.prepare(SampleOptions(n=2, anneal_rho=0.0))["anneal_rho"] == 0.0


def test_summary_counts_structurally_valid_crystals(model_dir, tmp_path):
    summary = sample_to_dir(model_dir, tmp_path / "s", SampleOptions(n=12, steps=4, seed=2), progress=False)
    by_cif = {c.id: structurally_valid(c.structure) for c in load_inputs(tmp_path / "s")
              if c.structure is not None}
    assert summary.structurally_valid == sum(by_cif.values())
    assert 0 < summary.structurally_valid < summary.decoded  # a random network makes some clashes
    import json

    assert json.loads((tmp_path / "s" / "summary.json").read_text())["structurally_valid"] == \
        summary.structurally_valid


def test_worker_processes_write_the_same_rows_and_cifs(model_dir, tmp_path):
    opts = SampleOptions(n=10, steps=4, seed=4)
    sample_to_dir(model_dir, tmp_path / "one", opts, progress=False)
    sample_to_dir(model_dir, tmp_path / "two", opts, progress=False, workers=2)
    assert (tmp_path / "one" / "samples.csv").read_text() == (tmp_path / "two" / "samples.csv").read_text()
    cifs = sorted((tmp_path / "one" / "cifs").glob("*.cif"))
    assert cifs and all((tmp_path / "two" / "cifs" / c.name).read_text() == c.read_text() for c in cifs)


@pytest.fixture(scope="module")
def sg_model(crystals):
    return _random_model(crystals, seed=1, space_groups=True)


def test_guidance_without_a_condition_is_unconditional_sampling(sg_model):
    plain = sg_model.sample_sets(4, steps=4, seed=3)
    same = sg_model.sample_sets(4, steps=4, seed=3, guidance=3.0)  # no space group: w is unused
    none = sg_model.sample_sets(4, steps=4, seed=3, space_group=None)
    for a in (same, none):
        np.testing.assert_array_equal(a.frac, plain.frac)
        np.testing.assert_array_equal(a.types, plain.types)


def test_space_group_guidance_changes_the_samples_and_w1_is_the_conditional_model(sg_model):
    plain = sg_model.sample_sets(4, steps=4, seed=3)
    cond = sg_model.sample_sets(4, steps=4, seed=3, space_group=225)
    strong = sg_model.sample_sets(4, steps=4, seed=3, space_group=225, guidance=3.0)
    assert not np.allclose(cond.types, plain.types) and not np.allclose(strong.types, cond.types)


def test_space_group_needs_a_model_trained_with_it(model_dir, sg_model, tmp_path):
    with pytest.raises(CrysgenError, match="without space-group"):
        sample_to_dir(model_dir, tmp_path / "o", SampleOptions(n=2, space_group=225), progress=False)
    with pytest.raises(CrysgenError, match="1-230"):
        sg_model.check_space_group(231)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"device": "bogus"}, "use cpu, cuda or cuda:N"),
    ({"device": "cuda:99"}, "cuda:99"),
    ({"options": SampleOptions(n=2, symprec=-1.0)}, "symprec"),
])
def test_bad_device_or_decode_options_are_refused_before_anything_is_written(model_dir, tmp_path, kwargs,
                                                                            message):
    args = {"options": SampleOptions(n=2, steps=2), "device": "cpu", **kwargs}
    with pytest.raises(CrysgenError, match=message):
        sample_to_dir(model_dir, tmp_path / "o", args["options"], device=args["device"], progress=False)
    assert not (tmp_path / "o").exists()


def test_an_output_path_that_is_a_file_is_refused(model_dir, tmp_path):
    (tmp_path / "f").write_text("keep me")
    with pytest.raises(CrysgenError, match="is a file, not a folder"):
        sample_to_dir(model_dir, tmp_path / "f", SampleOptions(n=2, steps=2), progress=False)
    assert (tmp_path / "f").read_text() == "keep me"


def test_size_batches_group_similar_sizes_and_cover_every_crystal():
    width = np.random.default_rng(0).integers(1, 21, 500)
    batches = size_batches(width, 64)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(500))
    assert max(len(b) for b in batches) <= 64
    padded = sum(len(b) * width[b].max() for b in batches)
    assert padded <= 1.25 * width.sum()  # one batch of 64 padded to 20 would be ~1.9x
    assert all(width[b].max() <= width[c].min() for b, c in itertools.pairwise(batches))
    assert size_batches(np.array([], int), 8) == []


def test_sampling_cuts_padding_without_touching_real_sites(model_dir):
    model = AtomDiffusionModel.from_pretrained(model_dir)
    sets = model.sample_sets(12, steps=3, seed=5, batch_size=4)
    assert sets.types.shape == (12, 30, 39) and sets.frac.shape == (12, 30, 3)
    assert not sets.frac[~sets.mask].any() and not sets.types[~sets.mask].any()
    assert np.isfinite(sets.frac[sets.mask]).all() and sets.frac[sets.mask].std() > 0.05


def test_the_batching_does_not_change_which_crystals_come_out(model_dir):
    model = AtomDiffusionModel.from_pretrained(model_dir)
    for churn in (0.0, 20.0):
        small, one = (model.sample_sets(12, steps=3, seed=5, batch_size=bs, churn=churn) for bs in (4, 12))
        np.testing.assert_array_equal(small.mask, one.mask)
        np.testing.assert_allclose(small.frac, one.frac, atol=1e-5)
        np.testing.assert_allclose(small.types, one.types, atol=1e-5)


def test_crystal_noise_is_each_crystal_s_own():
    d, steps = 4, 3
    (t1, f1, l1), c1 = crystal_noise([7, 0], np.array([3]), np.array([2]), 2, d, steps)
    (t2, f2, l2), c2 = crystal_noise([7, 0], np.array([9, 3]), np.array([5, 2]), 6, d, steps)
    torch.testing.assert_close(t2[1, :2], t1[0])
    torch.testing.assert_close(f2[1, :2], f1[0])
    torch.testing.assert_close(l2[1], l1[0])
    assert not t2[1, 2:].any() and not f2[1, 2:].any()  # padding sites stay zero
    assert c1.shape == (steps, 1, 2 * (d + 3) + 6) and c2.shape == (steps, 2, 6 * (d + 3) + 6)
    # edm_heun's layout: all sites' codes, then all sites' coordinates, then the lattice
    codes2, coords2, lat2 = c2[:, 1, :6 * d].view(steps, 6, d), c2[:, 1, 6 * d:6 * (d + 3)], c2[:, 1, -6:]
    torch.testing.assert_close(codes2[:, :2].reshape(steps, -1), c1[:, 0, :2 * d])
    first_two = coords2.view(steps, 6, 3)[:, :2].reshape(steps, -1)
    torch.testing.assert_close(first_two, c1[:, 0, 2 * d:2 * (d + 3)])
    torch.testing.assert_close(lat2, c1[:, 0, -6:])
    assert not codes2[:, 2:].any()
    (t0, f0, _), none = crystal_noise([7, 0], np.array([3]), np.array([2]), 2, d, 0)
    assert none is None and torch.equal(t0, t1) and torch.equal(f0, f1)  # the start ignores the churn
    (t3, _, _), _ = crystal_noise([8, 0], np.array([3]), np.array([2]), 2, d, 0)
    assert not torch.equal(t3, t0)


def _keeps(structure, sym, tol=1e-3):
    """Whether every operation of ``sym`` maps the structure's sites onto sites of their element."""
    frac = structure.frac_coords
    z = np.array(structure.atomic_numbers)
    for r, t, img in zip(sym.rotations, sym.translations, sym.images, strict=True):
        d = frac @ r.T + t - frac[img]
        if np.abs(d - np.round(d)).max() > tol or (z[img] != z).any():
            return False
    return True


def test_symmetry_prior_samples_keep_their_templates_symmetry(model_dir, crystals, tmp_path):
    from crysgen.pipelines.symmetry import Templates
    from crysgen.representations.symmetry import trivial_symmetry

    crystals.save(tmp_path / "train.npz")
    options = SampleOptions(n=8, steps=6, symmetry_prior=str(tmp_path / "train.npz"))
    model = AtomDiffusionModel.from_pretrained(model_dir)
    kwargs = model.prepare(options)
    templates = kwargs["templates"]
    assert len(templates) == 8 and set(templates.sources) <= set(NAMES)
    assert len(set(templates.sources)) > 1  # drawn, not one crystal for all
    ids = [f"s{i}" for i in range(8)]
    res = model.generate(8, seed=[0, 0], ids=ids, **kwargs)
    same_sizes = Templates([trivial_symmetry(s.num_sites) for s in templates.symmetries if s is not None],
                           templates.sources)
    free = model.generate(8, seed=[0, 0], ids=ids, **(kwargs | {"templates": same_sizes}))
    free_by_id = {str(i): free.crystals.to_structure(k) for k, i in enumerate(free.crystals.ids)}
    assert len(res.crystals) >= 6
    broken_without = 0
    for k, sample_id in enumerate(res.crystals.ids):
        i = ids.index(str(sample_id))
        sym, source = templates.symmetries[i], templates.sources[i]
        assert sym is not None
        s = res.crystals.to_structure(k)
        assert len(s) == sym.num_sites == crystals.num_sites[NAMES.index(source)]
        assert _keeps(s, sym)
        if sym.num_ops > 1 and str(sample_id) in free_by_id:
            broken_without += not _keeps(free_by_id[str(sample_id)], sym)
    assert broken_without > 0  # the same noise without the projection gives crystals without it
    sample_to_dir(model_dir, tmp_path / "s", options, progress=False)
    rows = _rows(tmp_path / "s")
    assert [r["template"] for r in rows] == templates.sources  # samples.csv names each template


def test_symmetry_prior_with_compositions_keeps_elements_and_symmetry(model_dir, crystals, tmp_path):
    crystals.save(tmp_path / "train.npz")
    targets = CrystalSet.from_structures([load_cif("SrTiO3")], ids=["t"])
    targets.atomic_numbers[targets.atomic_numbers == 38] = 56  # BaTiO3: fits SrTiO3's template
    targets.save(tmp_path / "t.npz")
    out = tmp_path / "s"
    options = SampleOptions(n=3, steps=6, compositions=str(tmp_path / "t.npz"), per_target=3,
                            symmetry_prior=str(tmp_path / "train.npz"))
    sample_to_dir(model_dir, out, options, progress=False)
    assert {r["template"] for r in _rows(out)} == {"SrTiO3"}
    for c in load_inputs(out):
        assert c.structure is not None and c.structure.composition.reduced_formula == "BaTiO3"
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        assert SpacegroupAnalyzer(c.structure, symprec=1e-3).get_space_group_number() == 221


def test_a_composition_model_prior_takes_templates_that_fit_its_compositions(
        model_dir, composition_model_dir, crystals, tmp_path):
    crystals.save(tmp_path / "train.npz")
    out = tmp_path / "s"
    options = SampleOptions(n=8, steps=4, composition_prior=str(composition_model_dir),
                            symmetry_prior=str(tmp_path / "train.npz"))
    with pytest.warns(UserWarning, match="never saw Rb"):
        sample_to_dir(model_dir, out, options, progress=False)
    rows = [r for r in _rows(out) if r["formula"] in ("NaCl", "SrTiO3")]
    assert len(rows) >= 6
    # each drawn composition takes the known crystal that fits it (here: itself)
    assert all(r["template"] == r["formula"] for r in rows)


def _template_start_setup(model_dir, crystals, tmp_path):
    """The tiny model, BaTiO3 (three per target) on SrTiO3's template, and its prepared settings."""
    crystals.save(tmp_path / "train.npz")
    targets = CrystalSet.from_structures([load_cif("SrTiO3"), load_cif("ZnO_wurtzite")], ids=["t", "z"])
    targets.atomic_numbers[targets.atomic_numbers == 38] = 56  # BaTiO3 fits SrTiO3; ZnO itself
    targets.save(tmp_path / "t.npz")
    model = AtomDiffusionModel.from_pretrained(model_dir)
    comps = model.compositions_from_targets(targets, per_target=3)
    options = SampleOptions(n=6, steps=4, compositions=str(tmp_path / "t.npz"), per_target=3,
                            symmetry_prior=str(tmp_path / "train.npz"))
    return model, comps, model.prepare(options, compositions=comps)


def test_a_template_start_refines_the_template_itself(model_dir, crystals, tmp_path):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    model, comps, kwargs = _template_start_setup(model_dir, crystals, tmp_path)
    ids = [f"s{i}" for i in range(6)]
    near = model.generate(6, seed=[0, 0], ids=ids, compositions=comps,
                          **(kwargs | {"template_start": 0.003, "churn": 0.0}))
    far = model.generate(6, seed=[0, 0], ids=ids, compositions=comps, **kwargs)
    matcher = StructureMatcher(stol=0.05, ltol=0.05, angle_tol=1, scale=False, primitive_cell=False)
    templates = {"t": load_cif("SrTiO3"), "z": load_cif("ZnO_wurtzite")}
    for k, sample_id in enumerate(near.crystals.ids):
        s = near.crystals.to_structure(k)
        template = templates[comps.targets[ids.index(str(sample_id))]].copy()
        template.replace_species({"Sr": "Ba"} if "Sr" in template.composition else {})
        assert matcher.fit(s, template)  # started next to the template, it stays there
    assert len(near.crystals) == 6
    # from noise, this random tiny network lands elsewhere: the start is what kept the template
    assert not all(matcher.fit(far.crystals.to_structure(k), templates["z"])
                   for k, i in enumerate(far.crystals.ids) if comps.targets[ids.index(str(i))] == "z")


def test_a_template_start_moves_away_from_the_template_as_sigma_grows(model_dir, crystals, tmp_path):
    model, comps, kwargs = _template_start_setup(model_dir, crystals, tmp_path)
    z = comps.atomic_numbers
    sym = kwargs["templates"]
    moved = []
    for sigma in (0.003, 0.05, 0.5):
        sets = model.sample_sets(6, steps=4, atomic_numbers=z, templates=sym, template_start=sigma, churn=0.0)
        d = sets.frac[:, :5] - np.stack([t.positions[:5] if t.num_sites >= 5 else
                                                np.pad(t.positions, ((0, 5 - t.num_sites), (0, 0)))
                                                for t in sym.symmetries])
        real = sets.mask[:, :5]
        moved.append(float(np.abs((d - np.round(d))[real]).mean()))
    assert moved[0] < 0.01 < moved[2] and moved[0] < moved[1] < moved[2]


@pytest.mark.parametrize(("change", "message"), [
    ({"templates": None}, "needs symmetry templates"),
    ({"atomic_numbers": None}, "needs the elements given"),
    ({"template_start": 1000.0}, "must lie in"),
    ({"template_start": 0.0}, "must lie in"),
])
def test_a_bad_template_start_gets_a_clear_error(model_dir, crystals, tmp_path, change, message):
    model, comps, kwargs = _template_start_setup(model_dir, crystals, tmp_path)
    args = {"atomic_numbers": comps.atomic_numbers, "templates": kwargs["templates"], "template_start": 0.1}
    with pytest.raises(CrysgenError, match=message):
        model.sample_sets(6, steps=2, **(args | change))


def test_the_cli_takes_a_template_start_and_records_it(model_dir, crystals, tmp_path):
    import json

    _template_start_setup(model_dir, crystals, tmp_path)
    out = tmp_path / "s"
    assert main(["sample", str(model_dir), "--compositions", str(tmp_path / "t.npz"), "--symmetry-prior",
                 str(tmp_path / "train.npz"), "--template-start", "0.05", "--steps", "3", "--out", str(out),
                 "--quiet"]) == 0
    assert json.loads((out / "sample_config.json").read_text())["options"]["template_start"] == 0.05
    assert {r["template"] for r in _rows(out)} == {"SrTiO3", "ZnO_wurtzite"}


def test_crystens_models_refuse_a_symmetry_prior(tmp_path):
    from crysgen.pipelines.generators import CRYSTENS_MODEL

    with pytest.raises(CrysgenError, match="atom diffusion models only"):
        sample_to_dir(CRYSTENS_MODEL, tmp_path / "o", SampleOptions(n=2, symmetry_prior="x.npz"),
                      progress=False)


def test_a_space_group_model_is_conditioned_on_each_templates_group(sg_model, crystals):
    from crysgen.pipelines.symmetry import templates_of_rows

    templates = templates_of_rows(crystals, np.array([0, 1, 2, 3]))
    seen = []
    forward = sg_model.net.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["space_group"].tolist())
        return forward(*args, **kwargs)

    sg_model.net.forward = spy
    try:
        sg_model.sample_sets(4, steps=2, seed=0, templates=templates)
    finally:
        del sg_model.net.forward
    want = {s.space_group for s in templates.symmetries if s is not None}
    assert want == {225, 221, 186, 1} and {g for call in seen for g in call} == want
    with pytest.raises(CrysgenError, match="exclude each other"):
        sg_model.sample_sets(4, steps=2, templates=templates, space_group=225)


def test_a_new_space_group_embedding_leaves_the_network_as_it_was():
    torch.manual_seed(0)
    net = AtomTransformer(type_dim=39, d_model=32, n_layers=2, n_heads=4, edge_hidden=16, space_groups=True)
    for name, p in net.named_parameters():  # a trained network's conditioning paths are live
        if not name.startswith("space_group."):
            torch.nn.init.normal_(p, std=0.05)
    b, s = 2, 3
    args = (torch.randn(b, s, 39), torch.rand(b, s, 3), torch.randn(b, 6), torch.ones(b, s, dtype=torch.bool),
            torch.zeros(b), torch.zeros(b, dtype=torch.bool), torch.eye(3).expand(b, 3, 3) * 4)
    with torch.no_grad():
        plain = net(*args)
        grouped = net(*args, space_group=torch.tensor([225, 12]))
    for a, g in zip(plain, grouped, strict=True):
        torch.testing.assert_close(a, g)


def test_the_cli_takes_a_template_ranker_and_refuses_it_without_compositions(model_dir, crystals, tmp_path,
                                                                             capsys):
    import json

    from crysgen.pipelines.template_ranking import FEATURES, TemplateRanker

    _template_start_setup(model_dir, crystals, tmp_path)
    w = np.zeros((len(FEATURES), 1))
    w[FEATURES.index("cost"), 0] = -1.0
    TemplateRanker(mean=np.zeros(len(FEATURES)), scale=np.ones(len(FEATURES)), weights=[w],
                   biases=[np.zeros(1)]).save(tmp_path / "r.json")
    base = ["sample", str(model_dir), "--symmetry-prior", str(tmp_path / "train.npz"), "--steps", "2",
            "--quiet"]
    given = [*base, "--compositions", str(tmp_path / "t.npz"), "--template-ranker"]
    out = tmp_path / "s"
    assert main([*given, str(tmp_path / "r.json"), "--out", str(out)]) == 0
    assert json.loads((out / "sample_config.json").read_text())["options"]["template_ranker"] == str(
        tmp_path / "r.json")
    assert {r["template"] for r in _rows(out)} == {"SrTiO3", "ZnO_wurtzite"}
    capsys.readouterr()
    assert main([*given, str(tmp_path / "x.json"), "--out", str(tmp_path / "s2")]) != 0
    assert "no such file" in capsys.readouterr().err
    assert main([*base, "-n", "2", "--template-ranker", str(tmp_path / "r.json"), "--out",
                 str(tmp_path / "s3")]) != 0
    assert "given compositions" in capsys.readouterr().err
    assert not (tmp_path / "s3").exists() or not list((tmp_path / "s3").glob("*.cif"))


def _mean_shift(a, b) -> float:
    """Mean periodic |Δ| of the real sites' fractional coordinates between two AtomSets."""
    d = a.frac - b.frac
    return float(np.abs(d - np.round(d))[a.mask].mean())


def test_a_restart_resamples_each_sample_from_where_it_ended(model_dir):
    model = AtomDiffusionModel.from_pretrained(model_dir)
    once = model.sample_sets(6, steps=4, seed=3, churn=0.0)
    shifts = {sigma: _mean_shift(model.sample_sets(6, steps=4, seed=3, churn=0.0, restart=(sigma, 3, 1)),
                                 once) for sigma in (0.003, 0.5)}
    # restarted at a tiny σ a sample stays where the first pass left it; at a large σ it moves on
    assert shifts[0.003] < 0.005 < shifts[0.5]
    twice = model.sample_sets(6, steps=4, seed=3, churn=0.0, restart=(0.5, 3, 2))
    again = model.sample_sets(6, steps=4, seed=3, churn=0.0, restart=(0.5, 3, 2))
    assert np.array_equal(twice.frac, again.frac)  # seeded: the same crystals again
    assert _mean_shift(twice, model.sample_sets(6, steps=4, seed=3, churn=0.0, restart=(0.5, 3, 1))) > 0.005


def test_a_restart_keeps_a_given_composition(model_dir, tmp_path):
    options = SampleOptions(n=4, steps=4, formula="SrTiO3", restart=(1.0, 3, 2))
    sample_to_dir(model_dir, tmp_path / "s", options, progress=False)
    decoded = [c.structure for c in load_inputs(tmp_path / "s") if c.structure is not None]
    assert decoded
    assert all(s.composition.reduced_formula == "SrTiO3" for s in decoded)


def _colliding(model, sets, real=None) -> np.ndarray:
    """Bool (N,): the samples with two real sites closer than 0.5 Å."""
    x = Parts(torch.as_tensor(sets.types), torch.as_tensor(sets.frac), torch.as_tensor(sets.lattice))
    mask = torch.as_tensor(sets.mask)
    return colliding_sites(x, mask, Constants.from_spec(model.spec), real=real).any(1).numpy()


def test_a_repair_resamples_the_colliding_samples_and_leaves_the_rest(model_dir):
    model = AtomDiffusionModel.from_pretrained(model_dir)
    first = model.sample_sets(24, steps=4, seed=3, churn=0.0)
    repaired = model.sample_sets(24, steps=4, seed=3, churn=0.0, repair=(0.5, 3, 3))
    hit = _colliding(model, first)
    assert hit.any(), "the first pass has no collision to repair: pick another seed"
    assert not _colliding(model, repaired).any()
    for part in ("frac", "lattice", "types"):  # samples without a collision: bit for bit the first pass
        np.testing.assert_array_equal(getattr(repaired, part)[~hit], getattr(first, part)[~hit])
    assert all(not np.array_equal(repaired.frac[i], first.frac[i]) for i in np.flatnonzero(hit))
    assert first.repair_rounds is None
    np.testing.assert_array_equal(repaired.repair_rounds > 0, hit)  # rounds counted where repaired
    again = model.sample_sets(24, steps=4, seed=3, churn=0.0, repair=(0.5, 3, 3))
    np.testing.assert_array_equal(again.frac, repaired.frac)  # seeded
    # from a tiny σ the sampler barely moves a site: only the fresh position of the later site of
    # each pair can undo the collision (a plain restart of those samples would leave it)
    tiny = model.sample_sets(24, steps=4, seed=3, churn=0.0, repair=(0.003, 2, 1))
    assert not _colliding(model, tiny).any()


def test_a_repair_keeps_a_given_composition_and_counts_no_empty_site(model_dir, empty_model, tmp_path,
                                                                     capsys):
    assert main(["sample", str(model_dir), "-n", "6", "--steps", "4", "--formula", "SrTiO3",
                 "--repair", "0.5:3:2", "--out", str(tmp_path / "s"), "--quiet"]) == 0
    decoded = [c.structure for c in load_inputs(tmp_path / "s") if c.structure is not None]
    assert decoded and all(s.composition.reduced_formula == "SrTiO3" for s in decoded)
    model = AtomDiffusionModel.from_pretrained(model_dir)
    z = model.compositions_from_formula("SrTiO3", 6, seed=[0, 2]).atomic_numbers
    want = model.sample_sets(6, steps=4, seed=[0, 0], atomic_numbers=z, repair=(0.5, 3, 2)).repair_rounds
    assert want.any(), "no sample needed a repair: pick another formula"
    assert [int(r["repair_rounds"]) for r in _rows(tmp_path / "s")] == want.tolist()  # the sampler's count
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["repaired"] == int((want > 0).sum())
    assert f"{summary['repaired']} repaired;" in capsys.readouterr().out
    model = AtomDiffusionModel.from_pretrained(empty_model)
    first = model.sample_sets(16, steps=4, seed=3, churn=0.0)
    repaired = model.sample_sets(16, steps=4, seed=3, churn=0.0, repair=(0.5, 3, 3))

    def real(sets):  # the sites that decode to an atom, not to an empty site
        allowed = [0, *model.spec.elements]
        return torch.as_tensor(sets.mask & (nearest_elements(sets.types, allowed, model.spec) > 0))

    hit = _colliding(model, first, real(first))
    np.testing.assert_array_equal(repaired.frac[~hit], first.frac[~hit])
    assert hit.sum() > _colliding(model, repaired, real(repaired)).sum()


def test_a_model_that_sets_a_repair_repairs_by_default_and_off_turns_it_off(crystals, tmp_path, capsys):
    """Fails when the model's edm.repair is not the default, when --repair off still repairs, or
    when a folder sampled under another default is resumed with the new one."""
    plain = _random_model(crystals).save_pretrained(tmp_path / "plain", half=False)
    model = AtomDiffusionModel.from_pretrained(plain)
    want = model.sample_sets(6, steps=4, seed=[0, 0], repair=(0.5, 3, 2)).repair_rounds
    assert want.any(), "no sample needed a repair: pick another seed"
    config = json.loads((plain / "config.json").read_text())
    config["config"]["edm"]["repair"] = [0.5, 3, 2]
    repairing = tmp_path / "repairing"
    shutil.copytree(plain, repairing)
    (repairing / "config.json").write_text(json.dumps(config))
    assert AtomDiffusionModel.from_pretrained(repairing).edm.repair == (0.5, 3, 2)
    assert main(["sample", str(repairing), "-n", "6", "--steps", "4", "--out", str(tmp_path / "d"),
                 "--quiet"]) == 0
    assert [int(r["repair_rounds"]) for r in _rows(tmp_path / "d")] == want.tolist()
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["repaired"] == int((want > 0).sum())
    assert json.loads((tmp_path / "d" / "sample_config.json").read_text())["sampler"]["repair"] == [0.5, 3, 2]
    assert main(["sample", str(repairing), "-n", "6", "--steps", "4", "--repair", "off",
                 "--out", str(tmp_path / "off"), "--quiet"]) == 0
    assert all(r["repair_rounds"] == "" for r in _rows(tmp_path / "off"))
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["repaired"] is None
    assert main(["sample", str(plain), "-n", "6", "--steps", "4", "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    assert _rows(tmp_path / "p") == _rows(tmp_path / "off")  # off: as a model without a repair samples
    (tmp_path / "p" / "chunks" / "chunk_00000.csv").unlink()  # resume the plain folder with the new default
    (plain / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    argv = ["sample", str(plain), "-n", "6", "--steps", "4", "--out", str(tmp_path / "p"), "--quiet"]
    assert main(argv) != 0
    assert "other sampler settings (repair: None there, [0.5, 3, 2] now" in capsys.readouterr().err
    written = json.loads((tmp_path / "p" / "sample_config.json").read_text())
    del written["sampler"]["repair"]  # a folder from before the repair existed was not repaired either
    (tmp_path / "p" / "sample_config.json").write_text(json.dumps(written))
    assert main(argv) != 0 and "(repair: None there" in capsys.readouterr().err
    argv += ["--repair", "off"]  # the folder's own setting, given: it resumes
    assert main(argv) == 0 and (tmp_path / "p" / "chunks" / "chunk_00000.csv").exists()
    with pytest.raises(CrysgenError, match=r"edm\.repair"):
        AtomEDMConfig(repair=(0.5, 0, 1))


@pytest.mark.parametrize(("argv", "message"), [
    (["--restart", "0.1"], "SIGMA:STEPS"),
    (["--restart", "0.1:0"], "STEPS >= 1"),
    (["--restart", "1000:5"], "must lie in"),
    (["--repair", "0.3"], "--repair must be SIGMA:STEPS"),
    (["--repair", "1000:5"], "--repair's σ must lie in"),
])
def test_a_bad_restart_gets_a_clear_error(model_dir, tmp_path, capsys, argv, message):
    try:
        code = main(["sample", str(model_dir), "-n", "2", "--out", str(tmp_path / "o"), *argv])
    except SystemExit as stop:  # argparse's own refusal
        code = stop.code
    assert code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_crystens_models_refuse_a_restart(tmp_path):
    from crysgen.pipelines.generators import CRYSTENS_MODEL

    with pytest.raises(CrysgenError, match="atom diffusion models only"):
        sample_to_dir(CRYSTENS_MODEL, tmp_path / "o", SampleOptions(n=2, restart=(0.1, 5, 1)), progress=False)
    with pytest.raises(CrysgenError, match="atom diffusion models only"):
        sample_to_dir(CRYSTENS_MODEL, tmp_path / "p", SampleOptions(n=2, repair=(0.1, 5, 1)), progress=False)


@pytest.fixture(scope="module")
def empty_model(tmp_path_factory, crystals):
    """model_dir's network and spec trained (as it says) with up to 3 empty sites per crystal."""
    model = _random_model(crystals, edm=AtomEDMConfig(empty_sites=3))
    return model.save_pretrained(tmp_path_factory.mktemp("e") / "m", half=False)


def test_a_model_with_empty_sites_draws_its_tokens_from_sites_plus_up_to_that_many_empty(empty_model):
    empty_model = AtomDiffusionModel.from_pretrained(empty_model)
    sizes = np.asarray(empty_model.spec.num_atoms_counts, float)
    drawn = empty_model.draw_tokens(40_000, seed=1)
    want = np.convolve(sizes, np.ones(4))
    want /= want.sum()
    got = np.bincount(drawn, minlength=len(want)) / len(drawn)
    assert len(got) == len(want) and np.abs(got - want).max() < 0.01
    assert set(np.flatnonzero(want)) == set(np.unique(drawn))  # e.g. every size + 0..3


def test_de_novo_samples_of_a_model_with_empty_sites_drop_the_tokens_that_decode_to_no_element(empty_model):
    from crysgen.representations.atoms import lattice_parameters

    empty_model = AtomDiffusionModel.from_pretrained(empty_model)
    n = 48
    sets = empty_model.sample_sets(n, steps=4, seed=2)
    assert sets.mask.shape == (n, 33)
    np.testing.assert_array_equal(sets.mask.sum(1), empty_model.draw_tokens(n, seed=[2, 1]))
    # the nearest code of each token, computed here: row 0 of the codes is no element
    spec = empty_model.spec
    table = spec.codes()[[0, *spec.elements]]
    dist = ((sets.types[..., None, :] - table) ** 2).sum(-1)
    holds_atom = (dist.argmin(-1) > 0) & sets.mask
    assert (holds_atom.sum(1) < sets.mask.sum(1)).any()  # some tokens came out empty
    res = empty_model.generate(n, steps=4, seed=2)
    decoded = {cid: (k, lat) for cid, k, lat in zip(res.crystals.ids, res.crystals.num_sites,
                                                        res.crystals.lattice, strict=True)}
    cells = lattice_parameters(sets.lattice, sets.mask.sum(1), spec)
    checked = 0
    for i in range(n):
        if f"sample_{i}" in decoded:
            k, lat = decoded[f"sample_{i}"]
            assert k == holds_atom[i].sum()
            np.testing.assert_allclose(lat, cells[i], rtol=1e-5)
            checked += 1
    assert checked > n // 2


def test_a_model_with_empty_sites_keeps_a_given_composition_whole(empty_model, tmp_path):
    sample_to_dir(empty_model, tmp_path / "s",
                  SampleOptions(n=4, steps=3, formula="SrTiO3", num_atoms=5), progress=False)
    decoded = [c.structure for c in load_inputs(tmp_path / "s") if c.structure is not None]
    assert decoded and all(s.composition.reduced_formula == "SrTiO3" and len(s) == 5 for s in decoded)


CELLS = np.array([[5.6, 5.6, 5.6, 60.0, 60.0, 60.0], [4.0, 5.0, 6.0, 80.0, 95.0, 100.0],
                  [3.0, 3.0, 9.0, 90.0, 90.0, 120.0]])


def test_a_given_cell_is_held_and_the_network_sees_it_noised_with_the_crystals_own_noise(
        model_dir, monkeypatch):
    """Only the sites are sampled: the cell comes out as given, and every network evaluation sees
    it at that step's σ with one fixed noise draw per crystal (replacement), so the sites adapt to it.
    """
    import crysgen.pipelines.atoms as atoms

    model = AtomDiffusionModel.from_pretrained(model_dir)
    z = np.zeros((3, model.spec.max_atoms), np.int64)
    z[:, :2] = [11, 17]
    seen = []
    real_denoise = atoms.denoise

    def spy(net, x, sigma, *args, **kwargs):
        seen.append((x.lattice.clone(), sigma.clone()))
        return real_denoise(net, x, sigma, *args, **kwargs)

    monkeypatch.setattr(atoms, "denoise", spy)
    res = model.generate(3, steps=4, seed=2, compositions=Compositions(z, [""] * 3), lattices=CELLS,
                         churn=5.0)
    np.testing.assert_allclose(res.crystals.lattice, CELLS, rtol=1e-5)
    held = torch.as_tensor(model.held_lattices(CELLS, z > 0, None))
    noise = crystal_noise([2], np.arange(3), np.full(3, 2), 2, 39, 0)[0][2]
    assert len(seen) == 7  # 4 Heun steps, the last one Euler
    for lattice, sigma in seen:
        np.testing.assert_allclose(lattice, held + sigma[:, None] * noise, rtol=1e-5, atol=1e-5)
    # the sites follow the cell: another cell, other coordinates
    other = model.sample_sets(3, steps=4, seed=2, atomic_numbers=z, lattices=CELLS[::-1], churn=5.0)
    first = model.sample_sets(3, steps=4, seed=2, atomic_numbers=z, lattices=CELLS, churn=5.0)
    assert np.abs(other.frac[0, :2] - first.frac[0, :2]).max() > 1e-3


@pytest.mark.parametrize(("cells", "message"), [
    (CELLS[:2], "one cell"),
    (CELLS * [1, 1, -1, 1, 1, 1], "positive lengths"),
    (CELLS * [1, 1, 1, 1, 1, 3], "between 0 and 180"),
    (CELLS * [np.nan, 1, 1, 1, 1, 1], "finite"),
])
def test_a_bad_given_cell_gets_a_clear_error(model_dir, cells, message):
    model = AtomDiffusionModel.from_pretrained(model_dir)
    z = np.zeros((3, model.spec.max_atoms), np.int64)
    z[:, :2] = [11, 17]
    with pytest.raises(CrysgenError, match=message):
        model.sample_sets(3, steps=2, atomic_numbers=z, lattices=cells)


def test_a_given_cell_is_refused_beside_symmetry_templates(model_dir, crystals):
    from crysgen.pipelines.symmetry import match_templates

    model = AtomDiffusionModel.from_pretrained(model_dir)
    z = model.compositions_from_targets(crystals).atomic_numbers
    templates = match_templates(z, crystals)
    with pytest.raises(CrysgenError, match="symmetry templates"):
        model.sample_sets(len(crystals), steps=2, atomic_numbers=z, templates=templates,
                          lattices=np.tile(CELLS[:1], (len(crystals), 1)))


def test_the_cli_samples_sites_in_a_given_cell_written_niggli_reduced(model_dir, tmp_path, capsys):
    from pymatgen.core import Lattice

    out = tmp_path / "o"
    rc = main(["sample", str(model_dir), "-n", "3", "--steps", "4", "--formula", "NaCl", "--num-atoms", "4",
               "--cell", "3.99,5.64,5.64,90,90,90", "--out", str(out), "--quiet"])
    assert rc == 0
    want = Lattice.from_parameters(3.99, 5.64, 5.64, 90, 90, 90).get_niggli_reduced_lattice()
    decoded = [c.structure for c in load_inputs(out) if c.structure is not None]
    assert len(decoded) == 3
    for s in decoded:
        assert s.composition.reduced_formula == "NaCl" and len(s) == 4
        np.testing.assert_allclose(s.lattice.abc, want.abc, rtol=1e-4)
        np.testing.assert_allclose(s.lattice.angles, want.angles, atol=1e-2)
    assert json.loads((out / "sample_config.json").read_text())["options"]["cell"] == [3.99, 5.64, 5.64,
                                                                                       90, 90, 90]
    with pytest.raises(SystemExit):
        main(["sample", str(model_dir), "-n", "2", "--out", str(tmp_path / "bad"), "--cell", "4,4,4"])
    assert "six comma-separated numbers" in capsys.readouterr().err and not (tmp_path / "bad").exists()
