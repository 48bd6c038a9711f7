"""The provenance helper every benchmark stamps its result file with (benchmarks/provenance.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "provenance.py"


@pytest.fixture
def provenance():
    spec = importlib.util.spec_from_file_location("provenance_under_test", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_dirty_tree_is_refused_unless_allowed(provenance, monkeypatch):
    monkeypatch.setattr(provenance, "commit", lambda: "abc123-dirty")
    monkeypatch.delenv("CRYSGEN_ALLOW_DIRTY", raising=False)
    with pytest.raises(SystemExit, match="uncommitted changes"):
        provenance.require_clean()
    monkeypatch.setenv("CRYSGEN_ALLOW_DIRTY", "1")
    provenance.require_clean()
    monkeypatch.delenv("CRYSGEN_ALLOW_DIRTY")
    monkeypatch.setattr(provenance, "commit", lambda: "abc123")
    provenance.require_clean()


def test_stamp_names_libraries_and_the_scored_model(provenance, tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSGEN_COMMIT", "feedbeef")
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "weights.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text("{}")
    (tmp_path / "run" / "train_summary.json").write_text(json.dumps({"global_step": 1234}))
    s = provenance.stamp("cpu", model=model)
    assert s["commit"] == "feedbeef"
    assert s["libraries"]["numpy"] and s["libraries"]["torch"]
    assert s["model"]["sha256"] == {"weights.safetensors": hashlib.sha256(b"weights").hexdigest()}
    assert s["model"]["training_step"] == 1234
    assert "init" not in s["model"]


def test_a_continued_model_names_the_model_it_started_from(provenance, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"w")
    init = {"model": "src/crysgen/pretrained/atom_diffusion_mp20", "step": 18511}
    (model / "config.json").write_text(json.dumps({"data": {"step": 5183, "init": init}}))
    fp = provenance.model_fingerprint(model)
    assert fp["training_step"] == 5183
    assert fp["init"] == init


def test_a_host_s_gpus_are_one_line(provenance):
    assert provenance.gpu_label(["NVIDIA H200"]) == "NVIDIA H200"
    assert provenance.gpu_label(["NVIDIA H200", "NVIDIA H200"]) == "NVIDIA H200 ×2"
    assert provenance.gpu_label(["NVIDIA H200", "NVIDIA H100"]) == "NVIDIA H200, NVIDIA H100"


def test_the_commit_is_read_once_so_a_script_rewriting_its_own_result_stays_clean(provenance, monkeypatch):
    """A benchmark asks at import; the tracked result file it rewrites later must not make it dirty."""
    import subprocess

    monkeypatch.delenv("CRYSGEN_COMMIT", raising=False)
    getattr(provenance.commit, "cache_clear", lambda: None)()  # a fresh module: nothing read yet
    status = {"porcelain": ""}

    def fake_run(cmd, **kw):
        out = "abc123\n" if cmd[:2] == ["git", "rev-parse"] else status["porcelain"]
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(provenance.subprocess, "run", fake_run)
    assert provenance.commit() == "abc123"
    status["porcelain"] = " M benchmarks/results/relax_speed.json\n"  # the script's own first write
    assert provenance.stamp("cpu")["commit"] == "abc123"
