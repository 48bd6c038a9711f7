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


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared dataset not found: {path}")
    return path


def load_cif(name: str):
    from pymatgen.core import Structure

    return Structure.from_file(FILES / f"{name}.cif")


@pytest.fixture
def perov_csv() -> Path:
    return shared_file("perov_5", "val.csv.gz")
