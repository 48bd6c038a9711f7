from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crysgen import CrysgenError
from crysgen.models.cgcnn import CGCNN, CGCNNConfig
from crysgen.properties.model import PropertyModel
from crysgen.properties.registry import PRETRAINED, load_property_model
from crysgen.representations.graph import build_graph, collate
from tests.conftest import load_cif


def nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def copper() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]])


@pytest.fixture
def formation(cgcnn_dir):
    return load_property_model("formation_energy")


def test_every_pretrained_checkpoint_loads_and_gives_finite_values(cgcnn_dir):
    graphs = [build_graph(nacl()), build_graph(copper())]
    for name in PRETRAINED:
        pred = load_property_model(name).predict(graphs)
        assert np.isfinite(pred).all(), name


def test_pretrained_values_are_plausible_on_known_crystals(cgcnn_dir, formation):
    nacl_ef, srtio3_ef = formation.predict([build_graph(nacl()), build_graph(load_cif("SrTiO3"))])
    # Materials Project: NaCl -2.1, SrTiO3 -3.5 eV/atom
    assert -2.6 < nacl_ef < -1.6 and -4.0 < srtio3_ef < -3.0
    bulk = load_property_model("bulk_modulus").predict([build_graph(nacl()), build_graph(copper())])
    assert 15 < 10 ** bulk[0] < 40 and 100 < 10 ** bulk[1] < 200  # GPa: NaCl ~25, Cu ~140
    p = load_property_model("metal_classifier")
    probs = p.predict([build_graph(nacl()), build_graph(copper())])
    assert p.classes == ("semiconductor", "metal")
    assert probs[0, 0] > 0.9 and probs[1, 1] > 0.9
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_prediction_is_invariant_to_rotation_translation_order_and_supercell(formation):
    s = load_cif("SrTiO3")
    rot = torch.linalg.matrix_exp(torch.tensor([[0, -0.3, 0.2], [0.3, 0, -0.5], [-0.2, 0.5, 0]])).numpy()
    rotated = Structure(Lattice(s.lattice.matrix @ rot.T), s.species, s.frac_coords)
    shifted = Structure(s.lattice, s.species, (s.frac_coords + np.array([0.13, 0.41, 0.77])) % 1.0)
    order = np.random.default_rng(0).permutation(len(s))
    permuted = Structure(s.lattice, [s.species[i] for i in order], s.frac_coords[order])
    supercell = s * (2, 1, 1)
    preds = formation.predict([build_graph(x) for x in (s, rotated, shifted, permuted, supercell)])
    np.testing.assert_allclose(preds, preds[0], atol=1e-4)


def test_batched_prediction_equals_one_at_a_time(formation):
    graphs = [build_graph(x) for x in (nacl(), copper(), load_cif("ZnO_wurtzite"))]
    together = formation.predict(graphs, batch_size=3)
    alone = np.concatenate([formation.predict([g]) for g in graphs])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_unknown_model_name_lists_the_known_ones(cgcnn_dir):
    with pytest.raises(CrysgenError, match="formation_energy"):
        load_property_model("no_such_model")


def test_missing_models_dir_says_what_to_do(monkeypatch):
    monkeypatch.delenv("CRYSGEN_MODELS_DIR", raising=False)
    with pytest.raises(CrysgenError, match="CRYSGEN_MODELS_DIR"):
        load_property_model("formation_energy")


def test_save_load_roundtrip_gives_identical_predictions(tmp_path):
    torch.manual_seed(0)
    net = CGCNN(config=CGCNNConfig(atom_feature_len=8, n_conv=2), atom_features=torch.rand(101, 8))
    model = PropertyModel(net.eval(), "heat_ref", "eV", mean=1.5, std=0.3)
    again = PropertyModel.from_pretrained(model.save_pretrained(tmp_path / "m"))
    graphs = [build_graph(nacl()), build_graph(copper())]
    np.testing.assert_array_equal(model.predict(graphs), again.predict(graphs))
    assert again.target == "heat_ref" and again.unit == "eV"


def test_a_few_training_steps_lower_the_loss():
    from crysgen.training.property import PropertyModule, PropertyTrainConfig

    torch.manual_seed(0)
    net = CGCNN(config=CGCNNConfig(atom_feature_len=8, n_conv=2), atom_features=torch.rand(101, 8))
    module = PropertyModule(net, mean=0.0, std=1.0, config=PropertyTrainConfig())
    structures = [nacl(), copper(), load_cif("SrTiO3"), load_cif("ZnO_wurtzite")]
    batch = (collate([build_graph(s) for s in structures]), torch.tensor([-2.1, 0.0, -3.5, -1.8]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    first = module._loss(batch).item()
    for _ in range(30):
        opt.zero_grad()
        loss = module._loss(batch)
        loss.backward()
        opt.step()
    assert np.isfinite(loss.item()) and loss.item() < 0.5 * first
