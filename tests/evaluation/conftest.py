from __future__ import annotations

import pytest

from crysgen.evaluation import stability


@pytest.fixture(scope="module")
def chgnet_cpu():
    """CHGNet's bundled model on the CPU, answering isolated atoms without an error (as relaxations do)."""
    m = stability.load_chgnet("cpu")
    m.graph_converter.set_isolated_atom_response("ignore")
    return m
