from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest

FILES = Path(__file__).parent / "files"
SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 (libraries that use the legacy global state)
    warnings.filterwarnings("ignore", module="pymatgen")


@pytest.fixture
def one_torch_thread():
    """Tiny networks: one torch thread for the test (two threads on a busy shared CPU measured
    ~100x slower); use with ``pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared dataset not found: {path}")
    return path


def load_cif(name: str):
    from pymatgen.core import Structure

    return Structure.from_file(FILES / f"{name}.cif")


def rock_salts_and_wurtzite():
    """Three 8-site crystals with NaCl's element counts: wurtzite with NaCl's own elements (the best
    fit of NaCl itself, space group 186), and rock-salt KBr and KCl (225), as a CrystalSet."""
    from crysgen.crystal_set import CrystalSet

    nacl = load_cif("NaCl")
    kcl, kbr = nacl.copy(), nacl.copy()
    kcl.replace_species({"Na": "K"})
    kbr.replace_species({"Na": "K", "Cl": "Br"})
    wurtzite = load_cif("ZnO_wurtzite")
    wurtzite.make_supercell([1, 1, 2])
    wurtzite.replace_species({"Zn": "Na", "O": "Cl"})
    structures = [wurtzite, kbr, kcl]
    groups = [s.get_space_group_info(symprec=0.1)[1] for s in structures]
    assert groups == [186, 225, 225]
    return CrystalSet.from_structures(structures, ids=["w", "KBr", "KCl"], space_groups=groups)


@pytest.fixture
def perov_csv() -> Path:
    return shared_file("perov_5", "val.csv.gz")


CGCNN_DIR = SHARED / "pretrained" / "cgcnn"


@pytest.fixture
def cgcnn_dir(monkeypatch) -> Path:
    """The pre-trained cgcnn folder, also set as $CRYSGEN_MODELS_DIR (skips when absent)."""
    if not (CGCNN_DIR / "atom_init.json").is_file():
        pytest.skip(f"pre-trained cgcnn models not found: {CGCNN_DIR}")
    monkeypatch.setenv("CRYSGEN_MODELS_DIR", str(CGCNN_DIR))
    return CGCNN_DIR
