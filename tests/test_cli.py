from __future__ import annotations

import json
import os
import shutil

import pytest

from crysgen.cli import main
from tests.conftest import FILES


@pytest.fixture
def prepared(tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name in ("NaCl", "SrTiO3", "ZnO_wurtzite", "broken"):
        shutil.copy(FILES / f"{name}.cif", folder)
    out = tmp_path / "set.npz"
    assert main(["data", "prepare", str(folder), "--out", str(out), "--quiet"]) == 0
    return out


def test_prepare_writes_npz_and_report(prepared, capsys):
    report = json.loads(prepared.with_suffix(".report.json").read_text())
    assert report["n_kept"] == 3 and report["dropped_by_reason"] == {"unparsable": 1}


def test_roundtrip_json(prepared, capsys):
    assert main(["codec", "roundtrip", str(prepared), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 3 and out["matched"] == 3 and out["match_rate"] == 1.0
    assert "var_lattice_params" in out["mean_diagnostics"]


def test_roundtrip_text_with_noise_and_saved_scaling(prepared, tmp_path, capsys):
    scaling = tmp_path / "scaling.json"
    assert main(["codec", "fit-scaling", str(prepared), "--out", str(scaling)]) == 0
    assert main(["codec", "roundtrip", str(prepared), "--scaling", str(scaling),
                 "--noise", "0.003", "--mode", "faithful", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "matched" in text and "crystals/s" in text


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["codec", "roundtrip", str(tmp_path / "none.npz")]) == 2
    assert "no such CrystalSet" in capsys.readouterr().err
    assert main(["data", "prepare", str(FILES), "--out", str(tmp_path / "x.txt")]) == 2
    assert "must end in .npz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "prepare", str(FILES), "--out", "x.npz", "--cell", "weird"])


def test_console_script_runs():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "crysgen", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("crysgen ")


def test_options_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    from crysgen.data import prepare

    monkeypatch.setattr(prepare, "read_source", lambda *a, **k: pytest.fail("source read"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv, said in (
        (["--symprec", "-1"], "symprec"), (["--symprec", "nan"], "symprec"),
        (["--min-distance", "-1"], "min-distance"),
    ):
        assert main(["data", "prepare", str(FILES), "--out", str(tmp_path / "o.npz"), *argv]) == 2
        assert said in capsys.readouterr().err
    assert main(["data", "prepare", str(FILES), "--out", str(a_file / "o.npz")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["evaluate", str(FILES), "--train", str(a_file), "--reference", str(a_file),
                 "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_importing_crysgen_leaves_the_environment_alone():
    import subprocess
    import sys

    # every module of the package, in a fresh interpreter; torch and lightning set variables of
    # their own when imported, so they come first
    code = ("import os, pkgutil, importlib, torch, lightning\n"
            "before = dict(os.environ)\n"
            "import crysgen\n"
            "for m in pkgutil.walk_packages(crysgen.__path__, 'crysgen.'):\n"
            "    if m.name != 'crysgen.__main__':\n"
            "        importlib.import_module(m.name)\n"
            "changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}\n"
            "print(sorted(changed))\n")
    env = {k: v for k, v in os.environ.items() if k != "SPGLIB_WARNING"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_command_silences_spglib_only_while_it_runs(monkeypatch):
    from crysgen.cli import data

    seen = []
    monkeypatch.delenv("SPGLIB_WARNING", raising=False)
    monkeypatch.setattr(data, "_cmd_data_prepare",  # the handler that `data prepare` runs
                        lambda args: seen.append(os.environ.get("SPGLIB_WARNING")) or 0)
    assert main(["data", "prepare", "x", "--out", "x.npz"]) == 0
    assert seen == ["OFF"] and "SPGLIB_WARNING" not in os.environ
    monkeypatch.setenv("SPGLIB_WARNING", "ON")  # the user's own setting wins
    assert main(["data", "prepare", "x", "--out", "x.npz"]) == 0
    assert seen == ["OFF", "ON"]



def test_every_subcommand_has_a_handler_and_a_help_that_renders():
    import argparse

    from crysgen.cli import build_parser

    leaves = {}

    def walk(parser, path):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in subs:
            for name, child in action.choices.items():
                walk(child, (*path, name))
        if not subs:
            leaves[" ".join(path)] = parser

    walk(build_parser(), ())
    assert sorted(leaves) == sorted([
        "data prepare", "data download", "data label", "codec roundtrip", "codec fit-scaling",
        "sample", "relax", "train diffusion", "train atom-diffusion", "train gan", "train wgan",
        "train segmenter", "train vae", "train property", "train composition", "evaluate", "compare",
        "predict", "model cascade", "model export"])
    for path, parser in leaves.items():
        handler = parser.get_default("func")
        assert handler.__module__.startswith("crysgen.cli.") and handler.__name__.startswith("_cmd_"), path
        assert parser.format_help().startswith(f"usage: crysgen {path} ")  # a stray % fails only here


def test_the_parser_is_built_without_heavy_imports():
    import subprocess
    import sys

    # `crysgen --help` builds every subcommand's parser; the handlers import what they need
    code = ("import sys\nfrom crysgen.cli import build_parser\nbuild_parser()\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'lightning', 'pymatgen', 'spglib', 'scipy', 'ase', 'yaml'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

def test_evaluate_quiet_writes_per_family_and_stability_timings_to_metrics_json(tmp_path, capsys,
                                                                                 monkeypatch):
    from crysgen import CrystalSet
    from crysgen.evaluation import stability, suite
    from tests.conftest import load_cif

    names = ["NaCl", "SrTiO3", "ZnO_wurtzite"]
    samples = CrystalSet.from_structures([load_cif(n) for n in names], ids=names,
                                         max_sites=52).save(tmp_path / "samples.npz")
    train = CrystalSet.from_structures([load_cif("NaCl")], max_sites=52).save(tmp_path / "train.npz")
    cache = stability.elements_cache_path(tmp_path / "cache", "chgnet", stability.RelaxOptions(steps=3))
    cache.parent.mkdir(parents=True)  # terminal energies given (relaxing candidates is not the point)
    cache.write_text(json.dumps({x: {"fcc": -1.0} for x in ["Na", "Cl", "Sr", "Ti", "O", "Zn"]}))
    out = tmp_path / "report"
    during = []
    relax_all = suite.relax_all

    def watched(*a, **k):  # what a user reading metrics.json sees while the relaxation runs
        during.append(json.loads((out / "metrics.json").read_text()))
        return relax_all(*a, **k)

    monkeypatch.setattr(suite, "relax_all", watched)
    assert main(["evaluate", str(samples), "--train", str(train), "--reference", str(samples),
                 "--out", str(out), "--metrics", "validity,distributions,novelty,stability",
                 "--relax-steps", "3", "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    assert "it/s" not in capsys.readouterr().err  # quiet: no progress bars
    assert during[0]["status"] == "running" and during[0]["running"] == ["stability", "stability.relax"]
    assert {"load", "basics", "distributions", "novelty"} <= set(during[0]["seconds"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["status"] == "complete" and saved["metrics"]["n_samples"]["value"] == 3
    seconds = saved["seconds"]
    for step in ("load", "basics", "distributions", "novelty", "stability", "stability.relax",
                 "stability.hull_chgnet.reference_energies", "stability.hull_chgnet.terminals", "total"):
        assert seconds[step] >= 0, step
    parts = [v for k, v in seconds.items() if k.startswith("stability.")]
    assert sum(parts) <= seconds["stability"] + 0.05 <= seconds["total"] + 0.05
