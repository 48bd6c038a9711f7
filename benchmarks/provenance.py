"""Where a benchmark's figures come from: commit, command, machine, libraries, scored model, and
the published figures it compares with.

Every benchmark stamps its result file with :func:`stamp`. A benchmark script run from a tree
with uncommitted changes to tracked files is refused when this module is imported (its figures
could not be traced to a commit), unless ``CRYSGEN_ALLOW_DIRTY=1`` is set; then the commit is
recorded with ``-dirty``. Measure from a clean worktree (``git worktree add /tmp/wt HEAD``, run
there with ``PYTHONPATH=/tmp/wt/src``) while others edit the main one. On a machine whose copy of
the tree carries no usable git, ``CRYSGEN_COMMIT`` names the commit.

``published.json`` (next to this file) holds every figure of other work that a benchmark puts
beside its own, each with its source; scripts read them with :func:`published`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PUBLISHED = BENCHMARKS / "published.json"
LIBRARIES = ("torch", "numpy", "scipy", "scikit-learn", "pymatgen", "pymatgen-core", "spglib", "diffusers",
             "lightning", "chgnet", "sevenn", "smact", "matminer", "ase")
"""Distributions whose installed versions every stamp records (those installed)."""


def gpu_label(names: list[str]) -> str:
    """One line for a host's GPUs: "NVIDIA H200" for one, "NVIDIA H200 ×2" for two alike."""
    if len(set(names)) == 1:
        return names[0] + (f" ×{len(names)}" if len(names) > 1 else "")
    return ", ".join(names)


def machine(device: str | None = None) -> dict:
    """Host, CPU and GPU of this run; ``gpu_used`` from ``device`` when given, else from whether
    this process initialised CUDA (a run whose CUDA work happens in workers should pass it)."""
    info = {"hostname": platform.node(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines()
                            if ln.startswith("Model name")), "unknown")
    except (OSError, subprocess.CalledProcessError):
        info["cpu"] = platform.processor() or "unknown"
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, check=True).stdout.split("\n")
        info["gpu"] = gpu_label([n.strip() for n in names if n.strip()])
        if device is not None:
            info["gpu_used"] = device.startswith("cuda")
        else:
            torch = sys.modules.get("torch")
            info["gpu_used"] = bool(torch is not None and torch.cuda.is_initialized())
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


@functools.cache
def commit() -> str:
    """The checked-out commit, with ``-dirty`` when tracked files had uncommitted changes.

    Read once per process, when first asked: a benchmark script asks when it imports this module
    (:func:`require_clean`), before it has written anything, so a script that rewrites its own
    tracked result file several times (after every variant, every section) records the tree it
    started from, not its own output as an uncommitted change.
    """
    if os.environ.get("CRYSGEN_COMMIT"):  # the device machine's copy of the tree: named by the caller
        return os.environ["CRYSGEN_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def require_clean() -> None:
    """Refuse (SystemExit with the reason) a tree with uncommitted changes to tracked files,
    unless ``CRYSGEN_ALLOW_DIRTY=1``."""
    if commit().endswith("-dirty") and os.environ.get("CRYSGEN_ALLOW_DIRTY") != "1":
        raise SystemExit(f"{ROOT} has uncommitted changes to tracked files, so this benchmark's figures "
                         "could not be traced to a commit: commit first (or measure from a clean "
                         "worktree: git worktree add /tmp/wt HEAD), or set CRYSGEN_ALLOW_DIRTY=1 to "
                         "record the commit as -dirty")


def libraries() -> dict[str, str]:
    """Installed versions of :data:`LIBRARIES` (absent ones left out)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def model_fingerprint(model_dir: str | Path) -> dict[str, Any]:
    """The scored model: its folder, the SHA-256 of its weight files and, when recorded, its
    training step (``train_summary.json`` of the run next to it, or its config's data) and the
    model its run started from (``--init``: that model's folder and step)."""
    path = Path(model_dir)
    weights = sorted(p for p in path.glob("*") if p.suffix in (".safetensors", ".pt", ".ckpt", ".npz"))
    out: dict[str, Any] = {"path": str(model_dir),
                           "sha256": {p.name: file_sha256(p) for p in weights}}
    config = path / "config.json"
    data = json.loads(config.read_text()).get("data", {}) if config.is_file() else {}
    data = data if isinstance(data, dict) else {}
    for summary in (path / "train_summary.json", path.parent / "train_summary.json"):
        if summary.is_file():
            out["training_step"] = json.loads(summary.read_text()).get("global_step")
            break
    else:
        if "step" in data:
            out["training_step"] = data["step"]
    if isinstance(data.get("init"), dict):
        out["init"] = data["init"]
    return out


def stamp(device: str | None = None, *, model: str | Path | None = None) -> dict:
    """Command, commit, crysgen and library versions, machine (see :func:`machine` for
    ``device``), UTC date and, given ``model``, the scored model's fingerprint."""
    from crysgen import __version__

    out = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "commit": commit(),
        "crysgen_version": __version__,
        "libraries": libraries(),
        "machine": machine(device),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if model is not None:
        out["model"] = model_fingerprint(model)
    return out


def write_result(name: str, result: dict[str, Any], device: str | None = None, *,
                 model: str | Path | None = None) -> Path:
    """``result`` stamped (:func:`stamp`) and written atomically to ``benchmarks/results/<name>.json``.

    Non-JSON numbers (numpy floats) are written as floats. Prints and returns the path.
    """
    from crysgen.crystal_set import write_text_atomic

    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    write_text_atomic(path, json.dumps(result | stamp(device, model=model), indent=1, default=float) + "\n")
    print(f"wrote {path}")
    return path


@functools.cache
def _all_published() -> dict[str, Any]:
    return json.loads(PUBLISHED.read_text())


def published(section: str) -> dict[str, Any]:
    """One section of published.json ("dng", "csp", "crystens_tables_1_2", "properties").

    Raises:
        KeyError: for a section the file does not have (with the ones it has).
    """
    data = _all_published()
    if section not in data or section.startswith("_"):
        raise KeyError(f"published.json has no section {section!r} "
                       f"(has: {', '.join(k for k in data if not k.startswith('_'))})")
    return data[section]


def published_csp(dataset: str, k: int) -> list[dict[str, Any]]:
    """Published CSP rows (match rate %, RMSE) of a dataset at k samples per target."""
    return [r for r in published("csp")["rows"] if r["dataset"] == dataset and r["k"] == k]


def _benchmark_run() -> bool:
    """Whether this process runs a benchmark script (not a test, not ``--help``)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return (script is not None and script.suffix == ".py" and script.resolve().parent == BENCHMARKS
            and not {"-h", "--help"} & set(sys.argv[1:]))


if _benchmark_run():
    require_clean()  # refused before the script does any work
