from __future__ import annotations

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.objectives.atom_edm import Constants, Parts
from crysgen.pipelines.symmetry import (
    SymmetryBatch,
    Templates,
    element_cost,
    fit_template,
    match_templates,
    project,
    templates_of_rows,
)
from crysgen.representations.symmetry import site_symmetry, symmetrize
from tests.conftest import load_cif, rock_salts_and_wurtzite

NAMES = ("NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO")


def _crystals() -> CrystalSet:
    return CrystalSet.from_structures([load_cif(n) for n in NAMES], ids=list(NAMES))


def test_project_is_the_numpy_projection_batched_with_padding_and_free_rows():
    crystals = _crystals()
    width = 10
    templates = templates_of_rows(crystals, np.arange(4))
    syms = [*templates.symmetries, None]
    ns = np.r_[crystals.num_sites, 3]
    rng = np.random.default_rng(0)
    frac = rng.random((5, width, 3))
    frac[:4, :8] = crystals.frac_coords[:, :8] + rng.normal(0, 0.03, (4, 8, 3))
    lat = np.r_[crystals.lattice + np.c_[rng.normal(0, 0.1, (4, 3)), rng.normal(0, 2, (4, 3))],
                [[4.0, 5.0, 6.0, 80.0, 85.0, 95.0]]]
    mask = torch.as_tensor(np.arange(width)[None] < ns[:, None])
    feats = np.c_[np.log(lat[:, :3]) - np.log(ns)[:, None] / 3, np.radians(lat[:, 3:])]
    consts = Constants(1.0, torch.tensor([0.1, 0.2, 0.3, 1.0, 1.5, 1.6]),
                       torch.tensor([0.5, 0.5, 0.5, 0.2, 0.2, 0.2]))
    scaled = (feats - consts.lattice_mean.numpy()) / consts.lattice_std.numpy()
    x = Parts(torch.randn(5, width, 4), torch.as_tensor(frac, dtype=torch.float32),
              torch.as_tensor(scaled, dtype=torch.float32))
    out = project(x, SymmetryBatch.of(syms, width), mask, consts)
    for i, sym in enumerate(templates.symmetries):
        k = int(ns[i])
        want_f, want_l = symmetrize(frac[i, :k], lat[i], sym)
        d = out.frac[i, :k].numpy() - want_f
        assert np.abs(d - np.round(d)).max() < 1e-5
        raw = out.lattice[i].double().numpy() * consts.lattice_std.numpy() + consts.lattice_mean.numpy()
        got_l = np.r_[np.exp(raw[:3] + np.log(k) / 3), np.degrees(raw[3:])]
        assert np.allclose(got_l, want_l, atol=1e-3)
        orbits = sym.orbits()
        for o in set(orbits.tolist()):  # element codes agree within an orbit
            codes = out.types[i, :k][torch.as_tensor(orbits == o)]
            assert torch.allclose(codes, codes[:1].expand_as(codes), atol=1e-6)
        assert torch.equal(out.frac[i, k:], x.frac[i, k:])  # padding untouched
    assert torch.allclose(out.frac[4], x.frac[4]) and torch.allclose(out.types[4], x.types[4])
    assert torch.allclose(out.lattice[4], x.lattice[4], atol=1e-5)
    kept = project(x, SymmetryBatch.of(syms, width), mask, consts, types=False)
    assert torch.equal(kept.types, x.types)


def test_fit_template_renumbers_a_template_onto_exchanged_elements():
    st = load_cif("SrTiO3")
    z = np.array(st.atomic_numbers)
    sym = site_symmetry(z, st.frac_coords, np.array(st.lattice.parameters))
    target = np.array([8, 8, 8, 22, 56, 0, 0])  # BaTiO3 listed by atomic number: O first, Sr -> Ba
    fitted = fit_template(sym, z, target)
    assert fitted is not None
    orbits = fitted.orbits()
    assert len(set(orbits[:3].tolist())) == 1 and len(set(orbits.tolist())) == 3  # O3 one orbit
    for img in fitted.images:
        assert (target[:5][img] == target[:5]).all()  # every operation keeps elements in place
    assert fit_template(sym, z, np.array([8, 8, 22, 56, 0])) is None  # ABO2: counts do not fit
    assert fit_template(sym, z, np.array([8, 8, 8, 8, 22, 56])) is None  # 6 sites for 5


def test_match_templates_takes_the_most_alike_crystal_and_none_when_nothing_fits():
    crystals = _crystals()
    ba_ti_o3 = np.zeros((3, 8), np.int64)
    ba_ti_o3[0, :5] = [8, 8, 8, 22, 56]  # ABO3: SrTiO3 is the only crystal with 1:1:3
    ba_ti_o3[1, :8] = [19, 19, 19, 19, 35, 35, 35, 35]  # KBr in 8 sites: NaCl's template
    ba_ti_o3[2, :3] = [3, 8, 26]  # nothing has three sites
    t = match_templates(ba_ti_o3, crystals)
    assert t.sources == ["SrTiO3", "NaCl", ""] and t.symmetries[2] is None
    assert t.symmetries[0] is not None and t.symmetries[0].space_group == 221
    assert t.symmetries[1] is not None and t.symmetries[1].space_group == 225
    assert t.share_fitted() == 2 / 3 and t.num_sites.tolist() == [5, 8, 0]
    for row, sym in zip(ba_ti_o3, t.symmetries, strict=True):  # in the targets' site order
        if sym is not None:
            z = row[:sym.num_sites]
            assert all((z[img] == z).all() for img in sym.images)


def test_later_template_ranks_take_the_best_crystal_of_another_space_group():
    nacl = load_cif("NaCl")  # 8 sites, 4 Na + 4 Cl, Fm-3m
    kbr = nacl.copy()
    kbr.replace_species({"Na": "K", "Cl": "Br"})  # the same signature and group, other elements
    zno = load_cif("ZnO_wurtzite")
    zno.make_supercell([1, 1, 2])  # 8 sites, 4 Zn + 4 O, P6_3mc
    groups = [s.get_space_group_info(symprec=0.1)[1] for s in (zno, kbr, nacl)]
    assert groups == [186, 225, 225]
    crystals = CrystalSet.from_structures([zno, kbr, nacl], ids=["ZnO", "KBr", "NaCl"], space_groups=groups)
    target = np.zeros((1, 8), np.int64)
    target[0] = [11] * 4 + [17] * 4  # NaCl itself
    # KBr fits NaCl better than ZnO does: without one crystal per group, rank 1 would be KBr
    assert element_cost(np.array([19, 35]), np.array([11, 17])).sum() < element_cost(
        np.array([30, 8]), np.array([11, 17])).sum()
    ranked = [match_templates(target, crystals, rank=r) for r in range(3)]
    assert [t.sources[0] for t in ranked] == ["NaCl", "ZnO", ""]
    assert [t.symmetries[0].space_group for t in ranked[:2]] == [225, 186]
    assert ranked[2].symmetries[0] is None


def test_a_template_vote_takes_the_group_most_of_the_best_fitting_crystals_share():
    crystals = rock_salts_and_wurtzite()  # w: NaCl's own elements, the best fit, group 186
    target = np.array([[11] * 4 + [17] * 4])
    assert match_templates(target, crystals).sources == ["w"]
    assert match_templates(target, crystals, vote=2).sources == ["w"]  # a tie: the better fit's group
    assert match_templates(target, crystals, vote=3).sources == ["KCl"]  # two of three vote 225
    assert match_templates(target, crystals, vote=3, rank=1).sources == ["w"]
    with pytest.raises(CrysgenError, match="at least one crystal"):
        match_templates(target, crystals, vote=0)


def test_element_cost_prefers_alike_elements():
    assert element_cost(np.array(38), np.array(38)) == 0
    assert element_cost(np.array(38), np.array(56)) < element_cost(np.array(38), np.array(9))  # Sr: Ba < F


def test_templates_of_rows_repeat_rows_and_name_their_crystals():
    t = templates_of_rows(_crystals(), np.array([2, 2, 0]))
    assert isinstance(t, Templates) and t.sources == ["ZnO_wurtzite", "ZnO_wurtzite", "NaCl"]
    assert [s.space_group for s in t.symmetries if s is not None] == [186, 186, 225]
