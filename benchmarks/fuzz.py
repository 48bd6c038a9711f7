"""Fuzz crysgen with generated bad inputs (issue 22): no crash, hang, traceback or silent change.

Every input class of the issue, in several variants each, through the commands a user runs,
each run a subprocess with a timeout:

- ``data prepare`` over one folder of bad CIFs (``--workers 1`` and ``--workers 2``): every
  file (every data block) must come back kept or dropped with a reason of the expected kind;
  a kept crystal must have the composition the file describes (else: a silent change).
- ``evaluate`` (validity, distributions) over the same folder, 1 and 2 workers: every input gets
  a row; the classes that cannot be read get a ``problem``; no row with a changed formula.
- ``predict`` (one CGCNN model, when ../shared/pretrained/cgcnn exists) over the same folder.
- ``decode`` (both modes) of bad tensor batches, in a child process: every tensor decoded or
  failed with a reason; an empty batch gives an empty result.
- bad options, devices and paths in every subcommand of this package's data/codec/evaluate/
  predict/sample parts: exit status 2 with a message, no traceback, before any heavy work; a
  refused `sample` run leaves its output folder absent or empty.

Counts: process crashes (killed by a signal), hangs (timeouts), tracebacks, silent changes and
entries without a reason; each should be 0. Writes benchmarks/results/fuzz.json.

    .venv/bin/python benchmarks/fuzz.py            # ~2-4 min on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "fuzz.json"
CRYSGEN = [sys.executable, "-m", "crysgen"]
CGCNN = ROOT.parent / "shared" / "pretrained" / "cgcnn"

# base crystals: (name, lattice a b c alpha beta gamma, sites (element, x, y, z))
BASES = [
    ("NaCl", (5.64, 5.64, 5.64, 90, 90, 90),
     [("Na", 0, 0, 0), ("Na", .5, .5, 0), ("Na", .5, 0, .5), ("Na", 0, .5, .5),
      ("Cl", .5, .5, .5), ("Cl", 0, 0, .5), ("Cl", 0, .5, 0), ("Cl", .5, 0, 0)]),
    ("CsCl", (4.12, 4.12, 4.12, 90, 90, 90), [("Cs", 0, 0, 0), ("Cl", .5, .5, .5)]),
    ("MgO", (2.98, 2.98, 2.98, 60, 60, 60), [("Mg", 0, 0, 0), ("O", .5, .5, .5)]),
    ("ZnS", (3.82, 3.82, 6.26, 90, 90, 120),
     [("Zn", 1 / 3, 2 / 3, 0), ("Zn", 2 / 3, 1 / 3, .5), ("S", 1 / 3, 2 / 3, .375),
      ("S", 2 / 3, 1 / 3, .875)]),
    ("CaF2", (3.86, 3.86, 3.86, 60, 60, 60), [("Ca", 0, 0, 0), ("F", .25, .25, .25),
                                             ("F", .75, .75, .75)]),
    ("LiF", (4.03, 4.03, 4.03, 90, 90, 90),
     [("Li", 0, 0, 0), ("Li", .5, .5, 0), ("Li", .5, 0, .5), ("Li", 0, .5, .5),
      ("F", .5, .5, .5), ("F", 0, 0, .5), ("F", 0, .5, 0), ("F", .5, 0, 0)]),
]


def cif_text(name: str, lattice, sites, occupancies=None, block: str | None = None) -> str:
    """A P1 CIF of one block (lattice values are written as given, e.g. "nan")."""
    keys = ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")
    lines = [f"data_{block or name}", "_symmetry_space_group_name_H-M 'P 1'"]
    lines += [f"_cell_{k} {v}" for k, v in zip(keys, lattice, strict=True)]
    lines += ["loop_", " _symmetry_equiv_pos_as_xyz", " 'x, y, z'", "loop_", " _atom_site_type_symbol",
              " _atom_site_label", " _atom_site_fract_x", " _atom_site_fract_y", " _atom_site_fract_z",
              " _atom_site_occupancy"]
    occ = occupancies or [1] * len(sites)
    for k, ((el, x, y, z), o) in enumerate(zip(sites, occ, strict=True)):
        lines.append(f" {el} {el}{k} {x} {y} {z} {o}")
    return "\n".join(lines) + "\n"


def formula_of(sites) -> str:
    from pymatgen.core import Composition

    comp = Composition()
    for el, *_ in sites:
        comp += Composition(el)
    return comp.reduced_formula


def with_lattice(base, k: int, value) -> tuple:
    lat = list(base[1])
    lat[k] = value
    return tuple(lat)


def make_inputs(folder: Path) -> list[dict]:
    """Write the bad CIFs; one dict per expected entry: id, class, expected kind(s), formula."""
    folder.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []

    def add(cls: str, stem: str, data: bytes | str, expect: dict[str, object], formula: str | None,
            ids: list[str] | None = None) -> None:
        path = folder / f"{stem}.cif"
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        for ident in ids or [stem]:
            entries.append({"id": ident, "class": cls, "expect": expect, "formula": formula})

    degenerate = {"prepare": ["degenerate_lattice"], "read": "degenerate_lattice"}
    for b, base in enumerate(BASES):
        name, lat, sites = base
        f = formula_of(sites)
        ax = b % 3
        lattice_cases = [
            ("nan_length", with_lattice(base, ax, "nan")),
            ("inf_length", with_lattice(base, ax, "inf")),
            ("negative_length", with_lattice(base, ax, -lat[ax])),
            ("zero_length", with_lattice(base, ax, 0)),
            ("absurd_length", with_lattice(base, ax, 1e7)),
            ("tiny_length", with_lattice(base, ax, 1e-5)),
            ("zero_angle", with_lattice(base, 3 + ax, 0)),
            ("angle_180", with_lattice(base, 3 + ax, 180)),
            ("nan_angle", with_lattice(base, 3 + ax, "nan")),
            ("flat_angles", (*lat[:3], 60, 60, 170) if b % 2 else (*lat[:3], 120, 120, 120)),
        ]
        for cls, lattice in lattice_cases:
            add(cls, f"{cls}_{name}", cif_text(name, lattice, sites), degenerate, f)
        occ = [1] * len(sites)
        zero = list(occ)
        zero[0] = 0
        add("occupancy_zero", f"occupancy_zero_{name}", cif_text(name, lat, sites, zero),
            {"prepare": ["zero_occupancy"], "read": "zero_occupancy"}, f)
        neg = list(occ)
        neg[-1] = -1
        add("occupancy_negative", f"occupancy_negative_{name}", cif_text(name, lat, sites, neg),
            {"prepare": ["zero_occupancy"], "read": "zero_occupancy"}, f)
        over = list(occ)
        over[0] = 2.0
        add("occupancy_over_1", f"occupancy_over_1_{name}", cif_text(name, lat, sites, over),
            {"prepare": ["unparsable"], "read": "unparsable"}, f)
        half = list(occ)
        half[0] = 0.5
        add("partial_occupancy", f"partial_occupancy_{name}", cif_text(name, lat, sites, half),
            {"prepare": ["disordered"], "read": "disordered"}, f)
        xx = [("Xx", *sites[0][1:]), *sites[1:]]
        add("unknown_element", f"unknown_element_{name}", cif_text(name, lat, xx),
            {"prepare": ["element_out_of_range", "unknown_element"], "read": "unknown_element"}, None)
        close = [*sites, (sites[-1][0] if sites[0][0] == sites[-1][0] else sites[0][0],
                          sites[-1][1] + 0.001, sites[-1][2], sites[-1][3])]
        add("coincident_sites", f"coincident_sites_{name}", cif_text(name, lat, close),
            {"prepare": ["close_sites"], "read": None, "invalid": True}, formula_of(close))
        same = [*sites, sites[0]]
        add("duplicate_site", f"duplicate_site_{name}", cif_text(name, lat, same),
            {"prepare": ["unparsable"], "read": "unparsable"}, formula_of(same))
        nanc = [(sites[0][0], "nan", 0, 0), *sites[1:]]
        add("nan_coordinate", f"nan_coordinate_{name}", cif_text(name, lat, nanc),
            {"prepare": ["unparsable", "bad_coordinates"], "read": "unparsable|bad_coordinates"}, f)
        two = cif_text(name, lat, sites, block="first") + "\n" + cif_text(name, lat, sites, block="second")
        add("two_blocks", f"two_blocks_{name}", two, {"prepare": None, "read": None}, f,
            ids=[f"two_blocks_{name}:first", f"two_blocks_{name}:second"])
        three = (cif_text(name, lat, sites, block="a") + cif_text(name, with_lattice(base, 0, "nan"), sites,
                                                                  block="b")
                 + cif_text(name, lat, sites, block="c"))
        stem = f"three_blocks_one_bad_{name}"
        add("three_blocks_one_bad", stem, three, {"prepare": None, "read": None}, f,
            ids=[f"{stem}:a", f"{stem}:c"])
        entries.append({"id": f"{stem}:b", "class": "three_blocks_one_bad", "expect": degenerate,
                        "formula": f})
        good = cif_text(name, lat, sites)
        add("utf16_bom", f"utf16_bom_{name}", good.encode("utf-16"), {"prepare": None, "read": None}, f)
        add("utf16_no_bom", f"utf16_no_bom_{name}", good.encode("utf-16-le"),
            {"prepare": ["unparsable"], "read": "unparsable"}, f)
        add("truncated", f"truncated_{name}", good[: good.index("loop_")],
            {"prepare": ["unparsable"], "read": "unparsable"}, f)
        add("missing_cell", f"missing_cell_{name}", "\n".join(
            ln for ln in good.splitlines() if "_cell_length_b" not in ln) + "\n",
            {"prepare": ["unparsable"], "read": "unparsable"}, f)
        add("text_cell_value", f"text_cell_value_{name}", good.replace(f"_cell_length_a {lat[0]}",
                                                                        "_cell_length_a abc"),
            {"prepare": ["unparsable"], "read": "unparsable"}, f)
        rng = np.random.default_rng(b)
        add("binary_garbage", f"binary_garbage_{name}", rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
            {"prepare": ["unparsable"], "read": "unparsable"}, None)
    add("empty_file", "empty_file", "", {"prepare": ["unparsable"], "read": "unparsable"}, None)
    add("whitespace_file", "whitespace_file", "\n  \n", {"prepare": ["unparsable"], "read": "unparsable"},
        None)
    return entries


def run(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run a subprocess; rc, seconds, crashed (signal), hung (timeout), traceback, stderr tail."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                           env={**os.environ, **(env or {})})
        rc, out, err, hung = p.returncode, p.stdout, p.stderr, False
    except subprocess.TimeoutExpired as exc:
        rc, hung = None, True
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    return {"cmd": " ".join(str(c) for c in cmd[2:]), "rc": rc, "seconds": round(time.perf_counter() - t0, 2),
            "crashed": rc is not None and rc < 0, "hung": hung,
            "traceback": "Traceback (most recent call last)" in (out + err),
            "stderr_tail": err.strip().splitlines()[-1][:300] if err.strip() else ""}


def kind_of(text: str) -> str:
    return text.split(":")[0].strip()


def check_prepare(entries: list[dict], npz: Path, report: Path, res: dict) -> dict:
    from crysgen import CrystalSet

    counts = {"entries": len(entries), "without_reason": 0, "silent_changes": 0, "unexpected_reason": 0}
    examples: list[str] = []
    if res["rc"] != 0 or not report.is_file():
        counts["without_reason"] = len(entries)
        return {**counts, "examples": [f"run failed: {res['stderr_tail']}"]}
    rep = json.loads(report.read_text())
    dropped = {d["id"]: d for d in rep["dropped"]}
    cs = CrystalSet.load(npz)
    kept = {str(i): k for k, i in enumerate(cs.ids)}
    for e in entries:
        want = e["expect"]["prepare"]
        if e["id"] in kept:
            s = cs.to_structure(kept[e["id"]])
            if want is not None or (e["formula"] and s.composition.reduced_formula != e["formula"]):
                counts["silent_changes"] += 1
                examples.append(f"{e['id']}: kept as {s.composition.reduced_formula}")
        elif e["id"] in dropped:
            d = dropped[e["id"]]
            if not d["reason"] or not d["detail"]:
                counts["without_reason"] += 1
                examples.append(f"{e['id']}: dropped without a reason text")
            elif want is None or d["reason"] not in want:
                counts["unexpected_reason"] += 1
                examples.append(f"{e['id']}: {d['reason']}: {d['detail'][:80]}")
        else:
            counts["without_reason"] += 1
            examples.append(f"{e['id']}: neither kept nor dropped")
    counts["report_entries"] = rep["n_input"]
    counts["dropped_by_reason"] = rep["dropped_by_reason"]
    return {**counts, "examples": examples[:20]}


def check_rows(entries: list[dict], rows: list[dict], res: dict, value_column: str | None) -> dict:
    """Rows of evaluate's structures.csv or predict's CSV against the expected outcome."""
    counts = {"entries": len(entries), "without_reason": 0, "silent_changes": 0, "unexpected_reason": 0}
    examples: list[str] = []
    if res["rc"] != 0:
        counts["without_reason"] = len(entries)
        return {**counts, "examples": [f"run failed: {res['stderr_tail']}"]}
    by_id = {r["id"]: r for r in rows}
    for e in entries:
        r = by_id.get(e["id"])
        want = e["expect"]["read"]
        if r is None:
            counts["without_reason"] += 1
            examples.append(f"{e['id']}: no row")
            continue
        problem = r.get("problem", "")
        if want is None:
            if problem:
                counts["unexpected_reason"] += 1
                examples.append(f"{e['id']}: {problem[:80]}")
            elif e["formula"] and r.get("formula") != e["formula"]:
                counts["silent_changes"] += 1
                examples.append(f"{e['id']}: formula {r.get('formula')} != {e['formula']}")
            elif e["expect"].get("invalid") and value_column == "struct_valid" \
                    and r.get("struct_valid") != "False":
                counts["silent_changes"] += 1
                examples.append(f"{e['id']}: coincident sites counted structurally valid")
            continue
        if not problem:
            has_value = value_column is not None and r.get(value_column, "") not in ("", None)
            counts["silent_changes" if has_value or r.get("formula") else "without_reason"] += 1
            examples.append(f"{e['id']}: no problem given (formula {r.get('formula')!r})")
        elif kind_of(problem) not in want.split("|") and not problem.startswith(tuple(want.split("|"))):
            counts["unexpected_reason"] += 1
            examples.append(f"{e['id']}: {problem[:80]}")
        elif value_column and value_column != "struct_valid" and r.get(value_column, "") != "":
            counts["silent_changes"] += 1
            examples.append(f"{e['id']}: a value despite the problem")
    return {**counts, "examples": examples[:20]}


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------- decode (child process)
def decode_child(out: Path) -> None:
    """Decode bad tensor batches in both modes; write per-case outcomes as JSON."""
    from crysgen.errors import CrysgenError
    from crysgen.representations.crystens import CrysTensScaling, DecodeOptions, decode

    scaling = CrysTensScaling.paper()
    rng = np.random.default_rng(0)
    shape = (4, 64, 64)
    cases = {
        "empty_batch": np.zeros((0, *shape), np.float32),
        "all_zeros": np.zeros((2, *shape)),
        "all_ones": np.ones((2, *shape)),
        "all_nan": np.full((2, *shape), np.nan),
        "one_nan": np.where(np.arange(64)[None, None, None, :] == 5, np.nan, rng.random((2, *shape))),
        "pos_inf": np.full((2, *shape), np.inf),
        "neg_inf": np.full((1, *shape), -np.inf),
        "huge": np.full((2, *shape), 1e30),
        "negative": -rng.random((2, *shape)),
        "uniform_noise": rng.random((4, *shape)),
        "gaussian_noise": rng.normal(0.5, 0.3, (4, *shape)),
        "half": np.full((2, *shape), 0.5),
        "float16": rng.random((2, *shape)).astype(np.float16),
        "int": rng.integers(0, 2, (2, *shape)),
        "single_3d": rng.random(shape),
        "bool": rng.random((2, *shape)) > 0.5,
    }
    wrong = {"wrong_shape": np.zeros((2, 4, 32, 32)), "wrong_channels": np.zeros((2, 3, 64, 64)),
             "scalar": np.float64(1.0), "ragged_1d": np.zeros(7)}
    results = []
    for mode in ("auto", "faithful"):
        opts = DecodeOptions(mode=mode)
        for name, t in cases.items():
            n = 1 if np.ndim(t) == 3 else len(t)
            rec = {"case": name, "mode": mode, "n": n}
            try:
                res = decode(t, scaling, opts)
                ok = len(res.crystals) + len(res.failures) == n and all(f.reason for f in res.failures)
                rec.update(outcome="decoded", decoded=len(res.crystals), failed=len(res.failures),
                           accounted=ok, reasons=sorted({f.reason.split(":")[0] for f in res.failures}))
            except CrysgenError as exc:
                rec.update(outcome="error_message", message=str(exc)[:200], accounted=True)
            except Exception as exc:
                rec.update(outcome="traceback", message=f"{type(exc).__name__}: {exc}"[:200], accounted=False)
            results.append(rec)
        for name, t in wrong.items():
            rec = {"case": name, "mode": mode, "n": 1}
            try:
                decode(t, scaling, opts)
                rec.update(outcome="decoded_wrong_shape", accounted=False)
            except CrysgenError as exc:
                rec.update(outcome="error_message", message=str(exc)[:200], accounted=True)
            except Exception as exc:
                rec.update(outcome="traceback", message=f"{type(exc).__name__}: {exc}"[:200], accounted=False)
            results.append(rec)
    for bad in ({"symprec": float("nan")}, {"symprec": -1.0}, {"mode": "bogus"}):
        rec = {"case": f"options {bad}", "mode": "-", "n": 1}
        try:
            DecodeOptions(**bad)
            rec.update(outcome="accepted", accounted=False)
        except CrysgenError as exc:
            rec.update(outcome="error_message", message=str(exc)[:200], accounted=True)
        results.append(rec)
    out.write_text(json.dumps(results, indent=1))


# ---------------------------------------------------------------------- options
def option_cases(work: Path, folder: Path, ref: Path) -> list[tuple[str, list[str]]]:
    a_file = work / "a_file.txt"
    a_file.write_text("x")
    out_dir = work / "out_dir"
    out_dir.mkdir(exist_ok=True)
    p = ["data", "prepare", str(folder)]
    ok_out = ["--out", str(work / "o.npz"), "--quiet"]
    e = ["evaluate", str(folder), "--train", str(ref), "--reference", str(ref), "--quiet"]
    eo = ["--out", str(work / "ev_opt")]
    pr = ["predict", str(folder), "--models", "formation_energy", "--quiet"]
    return [
        ("prepare --symprec -1", [*p, *ok_out, "--symprec", "-1"]),
        ("prepare --symprec 0", [*p, *ok_out, "--symprec", "0"]),
        ("prepare --symprec nan", [*p, *ok_out, "--symprec", "nan"]),
        ("prepare --symprec inf", [*p, *ok_out, "--symprec", "inf"]),
        ("prepare --symprec 50", [*p, *ok_out, "--symprec", "50"]),
        ("prepare --min-distance -1", [*p, *ok_out, "--min-distance", "-1"]),
        ("prepare --workers 0", [*p, *ok_out, "--workers", "0"]),
        ("prepare --max-sites 0", [*p, *ok_out, "--max-sites", "0"]),
        ("prepare --limit -3", [*p, *ok_out, "--limit", "-3"]),
        ("prepare --out a folder", [*p, "--out", str(out_dir), "--quiet"]),
        ("prepare --out not .npz", [*p, "--out", str(work / "x.csv"), "--quiet"]),
        ("prepare --out below a file", [*p, "--out", str(a_file / "x.npz"), "--quiet"]),
        ("prepare missing source", ["data", "prepare", str(work / "nope"), *ok_out]),
        ("prepare --cell bogus", [*p, *ok_out, "--cell", "bogus"]),
        ("label --device bogus", ["data", "label", str(ref), "--model", "x", "--property", "p",
                                  "--out", str(work / "l.npz"), "--device", "bogus"]),
        ("label missing data", ["data", "label", str(work / "nope.npz"), "--model", "x", "--property",
                                "p", "--out", str(work / "l.npz")]),
        ("codec roundtrip --symprec -1", ["codec", "roundtrip", str(ref), "--symprec", "-1"]),
        ("codec roundtrip --symprec nan", ["codec", "roundtrip", str(ref), "--symprec", "nan"]),
        ("codec roundtrip missing file", ["codec", "roundtrip", str(work / "nope.npz")]),
        ("codec fit-scaling --out a folder", ["codec", "fit-scaling", str(ref), "--out", str(out_dir)]),
        ("evaluate --device bogus", [*e, *eo, "--device", "bogus"]),
        ("evaluate --device cuda (none here)", [*e, *eo, "--device", "cuda"]),
        ("evaluate --device cuda:7", [*e, *eo, "--device", "cuda:7"]),
        ("evaluate --out a file", [*e, "--out", str(a_file)]),
        ("evaluate missing --train", ["evaluate", str(folder), "--train", str(work / "nope.npz"),
                                      "--reference", str(ref), *eo, "--metrics", "novelty"]),
        ("evaluate missing --reference", ["evaluate", str(folder), "--train", str(ref), "--reference",
                                          str(work / "nope.npz"), *eo]),
        ("evaluate missing samples", ["evaluate", str(work / "nope"), "--train", str(ref),
                                      "--reference", str(ref), *eo]),
        ("evaluate --metrics bogus", [*e, *eo, "--metrics", "bogus"]),
        ("predict --device bogus", [*pr, "--device", "bogus"]),
        ("predict --device cuda (none here)", [*pr, "--device", "cuda"]),
        ("predict --out a folder", [*pr, "--out", str(out_dir)]),
        ("predict --out below a file", [*pr, "--out", str(a_file / "p.csv")]),
        ("predict missing input", ["predict", str(work / "nope.cif"), "--quiet"]),
        ("predict unknown model", [*pr[:2], "--models", "no_such_model", "--quiet"]),
        *sample_cases(work, a_file),
    ]


SAMPLE_OUT = "s_opt"
"""The folder every bad `crysgen sample` run is pointed at: it must stay absent or empty."""


def sample_cases(work: Path, a_file: Path) -> list[tuple[str, list[str]]]:
    """Bad `crysgen sample` options, for the bundled atom model and the bundled CrysTens model."""
    from crysgen.pipelines.generators import CRYSTENS_MODEL, DEFAULT_MODEL

    s = ["sample", str(DEFAULT_MODEL), "--out", str(work / SAMPLE_OUT), "--quiet"]
    c = ["sample", str(CRYSTENS_MODEL), "-n", "2", "--out", str(work / SAMPLE_OUT), "--quiet"]
    return [
        ("sample -n 0", [*s, "-n", "0"]),
        ("sample -n -5", [*s, "-n", "-5"]),
        ("sample -n missing", s),
        ("sample --steps 0", [*s, "-n", "2", "--steps", "0"]),
        ("sample --chunk-size 0", [*s, "-n", "2", "--chunk-size", "0"]),
        ("sample --batch-size -1", [*s, "-n", "2", "--batch-size", "-1"]),
        ("sample --workers 0", [*s, "-n", "2", "--workers", "0"]),
        ("sample --sampler bogus", [*s, "-n", "2", "--sampler", "bogus"]),
        ("sample --device bogus", [*s, "-n", "2", "--device", "bogus"]),
        ("sample --device cuda (none here)", [*s, "-n", "2", "--device", "cuda"]),
        ("sample --out a file", ["sample", str(DEFAULT_MODEL), "-n", "2", "--out", str(a_file), "--quiet"]),
        ("sample missing model", ["sample", str(work / "no_model"), "-n", "2", "--out",
                                  str(work / SAMPLE_OUT), "--quiet"]),
        ("sample model dir is a file", ["sample", str(a_file), "-n", "2", "--out", str(work / SAMPLE_OUT),
                                        "--quiet"]),
        ("sample --formula unknown element", [*s, "-n", "2", "--formula", "Xx2O3"]),
        ("sample --formula empty", [*s, "-n", "2", "--formula", ""]),
        ("sample --formula lowercase", [*s, "-n", "2", "--formula", "fe2o3"]),
        ("sample --formula too many sites", [*s, "-n", "2", "--formula", "Fe30O45"]),
        ("sample --num-atoms not a multiple", [*s, "-n", "2", "--formula", "Fe2O3", "--num-atoms", "7"]),
        ("sample --num-atoms without formula", [*s, "-n", "2", "--num-atoms", "4"]),
        ("sample --formula and --compositions", [*s, "-n", "2", "--formula", "NaCl", "--compositions",
                                                 str(work / "ref.npz")]),
        ("sample --compositions missing file", [*s, "--compositions", str(work / "nope.npz")]),
        ("sample --compositions not a CrystalSet", [*s, "--compositions", str(a_file)]),
        ("sample --per-target 0", [*s, "--compositions", str(work / "ref.npz"), "--per-target", "0"]),
        ("sample --space-group without model support", [*s, "-n", "2", "--space-group", "225"]),
        ("sample --space-group 0", [*s, "-n", "2", "--space-group", "0"]),
        ("sample --churn -1", [*s, "-n", "2", "--churn", "-1"]),
        ("sample --churn nan", [*s, "-n", "2", "--churn", "nan"]),
        ("sample --symprec -1", [*c, "--symprec", "-1"]),
        ("sample --decode-mode bogus", [*c, "--decode-mode", "bogus"]),
        ("sample CrysTens --formula unknown element", [*c, "--formula", "Xx2O3"]),
        ("sample CrysTens --formula too many sites", [*c, "--formula", "Fe30O45"]),
        ("sample CrysTens --space-group", [*c, "--space-group", "225"]),
        ("sample CrysTens --churn", [*c, "--churn", "10"]),
        ("sample atom model --condition", [*s, "-n", "2", "--condition", "3"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decode-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run (300)")
    args = parser.parse_args()
    if args.decode_child:
        decode_child(Path(args.decode_child))
        return

    import pymatgen.core
    import spglib

    from codec import stamp
    from crysgen import CrystalSet

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="crysgen_fuzz_"))
    folder = work / "cifs"
    entries = make_inputs(folder)
    n_files = len(list(folder.iterdir()))
    from pymatgen.core import Lattice, Structure

    ref_structs = [Structure(Lattice.from_parameters(*lat), [s[0] for s in sites], [s[1:] for s in sites])
                   for _, lat, sites in BASES]
    ref = work / "ref.npz"
    CrystalSet.from_structures(ref_structs, max_sites=52).save(ref)
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    runs: list[dict] = []
    stages: dict[str, dict] = {}

    for w in (1, 2):  # prepare
        npz = work / f"prep_w{w}.npz"
        res = run([*CRYSGEN, "data", "prepare", str(folder), "--out", str(npz), "--workers", str(w),
                   "--quiet"], args.timeout, env)
        runs.append(res)
        stages[f"prepare_workers{w}"] = check_prepare(entries, npz, npz.with_suffix(".report.json"), res)
        print(f"prepare --workers {w}: rc {res['rc']} in {res['seconds']} s", flush=True)

    for w in (1, 2):  # evaluate
        out = work / f"eval_w{w}"
        res = run([*CRYSGEN, "evaluate", str(folder), "--train", str(ref), "--reference", str(ref),
                   "--out", str(out), "--metrics", "validity,distributions", "--workers", str(w),
                   "--quiet"], args.timeout, env)
        runs.append(res)
        stages[f"evaluate_workers{w}"] = check_rows(entries, read_csv(out / "structures.csv"), res,
                                                    "struct_valid")
        metrics_text = (out / "metrics.json").read_text() if (out / "metrics.json").is_file() else ""
        try:
            json.loads(metrics_text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            stages[f"evaluate_workers{w}"]["metrics_json_strict"] = bool(metrics_text)
        except ValueError:
            stages[f"evaluate_workers{w}"]["metrics_json_strict"] = False
        print(f"evaluate --workers {w}: rc {res['rc']} in {res['seconds']} s", flush=True)

    if (CGCNN / "atom_init.json").is_file():  # predict
        out_csv = work / "predict.csv"
        res = run([*CRYSGEN, "predict", str(folder), "--models", "formation_energy", "--out", str(out_csv),
                   "--quiet"], args.timeout, {**env, "CRYSGEN_MODELS_DIR": str(CGCNN)})
        runs.append(res)
        stages["predict"] = check_rows(entries, read_csv(out_csv), res,
                                       "formation_energy_per_atom_eV_per_atom")
        print(f"predict: rc {res['rc']} in {res['seconds']} s", flush=True)
    else:
        stages["predict"] = {"skipped": f"no pre-trained CGCNN models in {CGCNN}"}

    dec_out = work / "decode.json"
    res = run([sys.executable, str(Path(__file__).resolve()), "--decode-child", str(dec_out)],
              args.timeout, env)
    res["cmd"] = "decode (child process of benchmarks/fuzz.py)"
    runs.append(res)
    dec = json.loads(dec_out.read_text()) if dec_out.is_file() else []
    stages["decode"] = {
        "entries": len(dec),
        "without_reason": sum(1 for d in dec if not d["accounted"] and d["outcome"] != "traceback"),
        "tracebacks": sum(1 for d in dec if d["outcome"] == "traceback"),
        "silent_changes": 0,
        "empty_batch": [d for d in dec if d["case"] == "empty_batch"],
        "cases": dec,
    }
    print(f"decode: rc {res['rc']} in {res['seconds']} s", flush=True)

    option_runs = []
    for label, cmd in option_cases(work, folder, ref):
        r = run([*CRYSGEN, *cmd], 120, {**env, "CRYSGEN_MODELS_DIR": str(CGCNN)})
        r["case"] = label
        r["refused_with_message"] = r["rc"] == 2 and bool(r["stderr_tail"]) and not r["traceback"]
        left = work / SAMPLE_OUT  # a refused sample run writes nothing
        r["wrote_samples"] = left.exists() and any(left.iterdir())
        shutil.rmtree(left, ignore_errors=True)
        option_runs.append(r)
        runs.append(r)
    stages["options"] = {
        "entries": len(option_runs),
        "without_reason": sum(1 for r in option_runs if not r["refused_with_message"]),
        "silent_changes": sum(r["wrote_samples"] for r in option_runs),
        "max_seconds": max(r["seconds"] for r in option_runs),
        "cases": [{k: r[k] for k in ("case", "rc", "seconds", "refused_with_message", "wrote_samples",
                                     "stderr_tail")}
                  for r in option_runs],
    }
    print(f"options: {len(option_runs)} runs", flush=True)

    data_stages = [s for s in stages.values() if "entries" in s]
    totals = {
        "generated_bad_inputs": len(entries) + len(dec) + len(option_runs),
        "cif_entries": len(entries),
        "cif_files": n_files,
        "input_classes": sorted({e["class"] for e in entries}),
        "decode_cases": len(dec),
        "option_cases": len(option_runs),
        "entry_checks": sum(s["entries"] for s in data_stages),
        "subprocess_runs": len(runs),
        "process_crashes": sum(r["crashed"] for r in runs),
        "hangs": sum(r["hung"] for r in runs),
        "tracebacks": sum(r["traceback"] for r in runs) + stages["decode"]["tracebacks"],
        "silent_changes": sum(s.get("silent_changes", 0) for s in data_stages),
        "entries_without_reason": sum(s.get("without_reason", 0) for s in data_stages),
        "unexpected_reason_kind": sum(s.get("unexpected_reason", 0) for s in data_stages),
    }
    result = {
        **stamp(),
        "libraries": {"pymatgen": pymatgen.core.__version__, "spglib": spglib.__version__,
                      "numpy": np.__version__, "python": sys.version.split()[0]},
        "totals": totals,
        "targets": {k: 0 for k in ("process_crashes", "hangs", "tracebacks", "silent_changes",
                                   "entries_without_reason")},
        "stages": stages,
        "runs": [{k: r[k] for k in ("cmd", "rc", "seconds", "crashed", "hung", "traceback")} for r in runs],
        "seconds_total": round(time.perf_counter() - t_start, 1),
        "cpu_count": os.cpu_count(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from crysgen.data.guards import dumps_strict

    out.write_text(dumps_strict(result, indent=1) + "\n")
    print(json.dumps(totals, indent=1))
    print(f"wrote {out} ({result['seconds_total']} s)")


if __name__ == "__main__":
    main()
