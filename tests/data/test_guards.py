from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crysgen import CrysgenError
from crysgen.data.guards import (
    InputProblem,
    check_device,
    check_symprec,
    dumps_strict,
    lattice_problem,
    parse_structure,
    space_group_number,
    space_group_number_or_zero,
    split_cif_blocks,
)
from tests.data.cifs import DEGENERATE, NACL_SITES, cif_text, with_lattice


@pytest.mark.parametrize("params", [
    (math.nan, 5, 5, 90, 90, 90), (math.inf, 5, 5, 90, 90, 90), (5, 5, 5, 0, 90, 90),
    (5, 5, 5, 90, 180, 90), (-5, 5, 5, 90, 90, 90), (0, 5, 5, 90, 90, 90), (1e7, 5, 5, 90, 90, 90),
    (5, 5, 5, 60, 60, 170), (5, 5, 5, 120, 120, 120), (1e-5, 5, 5, 90, 90, 90)])
def test_degenerate_cells_are_named(params):
    assert lattice_problem(np.array(params, float)) is not None
    assert lattice_problem((5.64, 5.64, 5.64, 90, 90, 90)) is None
    assert lattice_problem(Lattice.hexagonal(3, 5)) is None
    assert lattice_problem(np.zeros((3, 3))) is not None


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_spglib_is_never_given_a_degenerate_cell(name):
    # pymatgen builds these cells (NaN lengths and angles); spglib would segfault on them
    s = Structure(Lattice.from_parameters(*[float(v) for v in DEGENERATE[name]]), ["Na", "Cl"],
                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(InputProblem) as err:
        space_group_number(s)
    assert err.value.kind == "degenerate_lattice"
    assert space_group_number(Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]])) == 221
    # the samples.csv column: the same number, and 0 instead of the refusal
    assert space_group_number_or_zero(s) == 0
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]])
    assert space_group_number_or_zero(nacl) == 221


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_a_degenerate_cif_is_a_reason_not_a_structure(name):
    with pytest.raises(InputProblem) as err:
        parse_structure(cif_text(DEGENERATE[name]))
    assert err.value.kind == "degenerate_lattice"


def test_a_negative_length_is_not_read_as_positive():
    with pytest.raises(InputProblem, match=r"degenerate_lattice: _cell_length_a = -5\.64"):
        parse_structure(cif_text(with_lattice(0, -5.64)))


def test_occupancy_zero_is_a_reason_not_a_deleted_site():
    with pytest.raises(InputProblem) as err:
        parse_structure(cif_text(occupancies=[0] + [1] * 7))
    assert err.value.kind == "zero_occupancy" and "Na0" in err.value.detail
    assert parse_structure(cif_text()).composition.reduced_formula == "NaCl"


def test_parser_failures_say_what_was_wrong():
    with pytest.raises(InputProblem) as err:
        parse_structure(cif_text(occupancies=[2.0] + [1] * 7))
    assert err.value.kind == "unparsable" and "Occupancy 2.0" in err.value.detail
    with pytest.raises(InputProblem) as err:
        parse_structure(cif_text(sites=[("Na", "nan", 0, 0), *NACL_SITES[1:]]))
    assert "NaN" in err.value.detail and "no structures" not in err.value.detail


def test_cif_blocks_are_split_and_text_fields_do_not_start_one():
    text = cif_text(block="one") + "_note\n;\ndata_not_a_block\n;\n" + cif_text(block="two")
    blocks = split_cif_blocks(text)
    assert [name for name, _ in blocks] == ["one", "two"]
    assert all(parse_structure(t).composition.reduced_formula == "NaCl" for _, t in blocks)


def test_options_and_devices_are_checked():
    for bad in (0, -1, math.nan, math.inf, 5):
        with pytest.raises(CrysgenError):
            check_symprec(bad)
    assert check_symprec(0.01) == 0.01
    assert check_device("cpu") == "cpu"
    with pytest.raises(CrysgenError, match="use cpu, cuda"):
        check_device("bogus")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(CrysgenError, match="no CUDA device"):
            check_device("cuda")


def test_strict_json_writes_null_for_nan():
    text = dumps_strict({"a": math.nan, "b": [np.float64(np.inf), 1.5], "c": np.int64(3)})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": 3}
    assert "NaN" not in text and "Infinity" not in text
