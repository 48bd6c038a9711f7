"""Hand-made CIF text for the input-guard tests (issue 22): one P1 block per call."""

from __future__ import annotations

NACL_SITES = (("Na", 0, 0, 0), ("Na", .5, .5, 0), ("Na", .5, 0, .5), ("Na", 0, .5, .5),
              ("Cl", .5, .5, .5), ("Cl", 0, 0, .5), ("Cl", 0, .5, 0), ("Cl", .5, 0, 0))
NACL_LATTICE = (5.64, 5.64, 5.64, 90, 90, 90)


def cif_text(lattice=NACL_LATTICE, sites=NACL_SITES, occupancies=None, block="NaCl") -> str:
    """A P1 CIF; lattice values are written as given (e.g. "nan", -5.64)."""
    keys = ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")
    lines = [f"data_{block}", "_symmetry_space_group_name_H-M 'P 1'"]
    lines += [f"_cell_{k} {v}" for k, v in zip(keys, lattice, strict=True)]
    lines += ["loop_", " _symmetry_equiv_pos_as_xyz", " 'x, y, z'", "loop_", " _atom_site_type_symbol",
              " _atom_site_label", " _atom_site_fract_x", " _atom_site_fract_y", " _atom_site_fract_z",
              " _atom_site_occupancy"]
    for k, ((el, x, y, z), o) in enumerate(zip(sites, occupancies or [1] * len(sites), strict=True)):
        lines.append(f" {el} {el}{k} {x} {y} {z} {o}")
    return "\n".join(lines) + "\n"


def with_lattice(k: int, value) -> tuple:
    """NaCl's lattice with parameter ``k`` (a, b, c, alpha, beta, gamma) replaced."""
    lat = list(NACL_LATTICE)
    lat[k] = value
    return tuple(lat)


DEGENERATE = {  # the cells that crashed spglib (issue 22), and their relatives
    "nan_length": with_lattice(0, "nan"),
    "inf_length": with_lattice(1, "inf"),
    "zero_angle": with_lattice(3, 0),
    "angle_180": with_lattice(4, 180),
}


def write_folder(folder, cifs: dict[str, str]):
    """Write ``name -> CIF text`` as ``folder/name.cif``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in cifs.items():
        (folder / f"{name}.cif").write_text(text)
    return folder
