"""Static energies (eV/atom) of crystals with one of the stability family's potentials.

Two universal interatomic potentials rate stability, both with weights that ship inside their
PyPI wheels (no download at run time, ``HF_HUB_OFFLINE=1`` is enough):

* ``chgnet``: CHGNet 0.3.0 (package ``chgnet``, BSD-3-Clause): the core dependency, used for every
  relaxation (:mod:`crysgen.evaluation.stability`).
* ``sevennet``: SevenNet-0 (11Jul2024 checkpoint, package ``sevenn``, an optional extra:
  ``pip install 'crysgen[potentials]'``): an independent equivariant network (NequIP
  architecture) trained on the same MPtrj data. It re-scores the CHGNet-relaxed structures and
  the hull references with static energies, so each sample gets a second E_hull.
  ``sevenn`` is imported only when this potential is asked for (``--potential sevennet|both``);
  nothing else in crysgen imports it.

The two are not interchangeable number for number: CHGNet learned MPtrj's MP2020-*corrected*
energies, SevenNet-0 the raw PBE(+U) ones, so a chloride or oxide differs by the anion correction
(NaCl: SevenNet -3.38, CHGNet -3.67 eV/atom; -0.614 eV per Cl closes all but 0.02 of it). Each
potential's hull is built from its own energies only, so each E_hull is internally consistent;
what differs between them is what the corrections and the two fits change.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.evaluation.chgnet_batch import FORWARD_BATCH

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pymatgen.core import Structure
    from sevenn.nn.sequential import AtomGraphSequential

    from crysgen.evaluation.chgnet_batch import CrystalRow

POTENTIALS = ("chgnet", "sevennet")
"""The potentials that give static energies."""
POTENTIAL_CHOICES = (*POTENTIALS, "both")
"""What ``--potential`` accepts: one potential, or CHGNet and the second one."""
SECOND = "sevennet"
"""The second potential (re-scores CHGNet's relaxations)."""
SEVENNET_MODEL = "7net-0"
"""SevenNet's name of the bundled SevenNet-0 (11Jul2024) checkpoint (10 MB inside the wheel)."""

T = TypeVar("T")
_PACKAGE = {"chgnet": "chgnet", "sevennet": "sevenn"}
_MODELS: dict[tuple[str, str], Any] = {}


def check_potential(name: str) -> tuple[str, ...]:
    """The potentials ``--potential name`` needs; refuses an unknown name or a missing package.

    Runs before any work: nothing is imported (``importlib.util.find_spec`` only).

    Raises:
        CrysgenError: unknown name, or the second potential's package is not installed.
    """
    if name not in POTENTIAL_CHOICES:
        raise CrysgenError(f"--potential must be one of {', '.join(POTENTIAL_CHOICES)}, got {name!r}")
    needed = POTENTIALS if name == "both" else (name,)
    for p in needed:
        if importlib.util.find_spec(_PACKAGE[p]) is None:
            raise CrysgenError(f"--potential {name}: the {p} potential needs the '{_PACKAGE[p]}' package; "
                               "install it with: pip install 'crysgen[potentials]'")
    return needed


def potential_id(name: str) -> str:
    """Name and version of a potential's package and model, for cache keys.

    ``chgnet`` gives ``chgnet<version>`` (the key CHGNet's caches always had);
    ``sevennet`` gives ``sevennet<sevenn version>-7net-0``.
    """
    if name not in POTENTIALS:
        raise CrysgenError(f"unknown potential {name!r} (known: {', '.join(POTENTIALS)})")
    version = importlib.metadata.version(_PACKAGE[name])
    return f"chgnet{version}" if name == "chgnet" else f"sevennet{version}-{SEVENNET_MODEL}"


def describe(name: str) -> str:
    """One line naming the potential's model and package version (for metrics.json)."""
    if name == "chgnet":
        return f"CHGNet 0.3.0 weights in chgnet {importlib.metadata.version('chgnet')} (raw energies)"
    return (f"SevenNet-0 (11Jul2024) weights in sevenn {importlib.metadata.version('sevenn')} "
            "(raw energies; static, on the CHGNet-relaxed structures)")


def load_sevennet(device: str = "cpu") -> tuple[Any, float, set[int]]:
    """SevenNet-0 from the checkpoint inside the ``sevenn`` wheel, loaded once per process.

    Returns:
        (model in batch mode and eval mode on ``device``, cutoff in Å, known atomic numbers).
    """
    key = ("sevennet", device)
    if key not in _MODELS:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sevenn._keys as keys
            from sevenn.util import model_from_checkpoint, pretrained_name_to_path

            path = pretrained_name_to_path(SEVENNET_MODEL)  # a file inside the package, no network
            module, config = model_from_checkpoint(path)
        # sevenn annotates the model as a plain nn.Module; it builds an AtomGraphSequential
        model = cast("AtomGraphSequential", module)
        model.set_is_batch_data(True)
        model.eval()
        model.to(device)
        _MODELS[key] = (model, float(config[keys.CUTOFF]), {int(z) for z in config[keys.TYPE_MAP]})
    return _MODELS[key]


def forward_in_batches(forward: Callable[[list[T]], Any], items: Sequence[T], batch_size: int,
                       device: str = "cpu") -> np.ndarray:
    """``forward`` over ``items``, ``batch_size`` at a time; a batch that fails goes one at a time.

    The loop both potentials' static energies share: a batch whose forward pass raises (e.g. out
    of GPU memory, or one structure the model cannot take) is retried item by item (after
    emptying the CUDA cache on a GPU), so a bad item costs only itself: NaN.

    Args:
        forward: a list of items -> one number per item (array-like of that length).
        items: the inputs (graphs), in order.
        batch_size: items per forward call.
        device: where the model runs (``"cuda..."``: the cache is emptied before the retries).

    Returns:
        (len(items),) float64, in input order, NaN where the item failed on its own.
    """
    out = np.full(len(items), np.nan)
    for start in range(0, len(items), batch_size):
        chunk = list(items[start:start + batch_size])
        try:
            out[start:start + len(chunk)] = forward(chunk)
        except Exception:  # e.g. out of memory: one at a time, so a bad item costs only itself
            if device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
            for k, item in enumerate(chunk):
                try:
                    out[start + k] = forward([item])[0]
                except Exception:
                    out[start + k] = np.nan
    return out


def sevennet_graph_arrays(structure: Structure, cutoff: float) -> dict[str, Any] | str:
    """SevenNet's graph of one structure as its numpy dict, or why it could not be built.

    Runs in worker processes as well as here (numpy arrays pickle as plain bytes).
    """
    from pymatgen.io.ase import AseAtomsAdaptor
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    try:
        return dict(unlabeled_atoms_to_graph(AseAtomsAdaptor.get_atoms(structure), cutoff))
    except Exception as exc:  # a structure that cannot be graphed keeps NaN
        return f"{type(exc).__name__}: {str(exc)[:100]}"


def _sevennet_energies(structures: Sequence[Structure], device: str, batch_size: int,
                       workers: int = 1) -> np.ndarray:
    """SevenNet-0 energy per atom of each structure, ``batch_size`` structures per forward pass.

    The graphs are built first, in ``workers`` processes when more than one (the same graphs:
    :func:`sevennet_graph_arrays` either way); a failed batch is retried one structure at a time
    (:func:`forward_in_batches`).
    """
    import warnings
    from functools import partial

    import sevenn._keys as keys
    from sevenn.atom_graph_data import AtomGraphData
    from torch_geometric.data import Batch

    from crysgen.data.parallel import died_with_reason, robust_map

    model, cutoff, known = load_sevennet(device)
    out = np.full(len(structures), np.nan)
    # an element the model was not trained on: NaN, as a failed CHGNet call
    todo = [k for k, s in enumerate(structures) if len(s) and all(site.specie.Z in known for site in s)]
    build = partial(sevennet_graph_arrays, cutoff=cutoff)
    if workers > 1 and len(todo) > 1:
        arrays = robust_map(build, [structures[k] for k in todo], workers=min(workers, len(todo)),
                            died=died_with_reason, chunksize=max(1, min(64, len(todo) // (workers * 4))))
    else:
        arrays = [build(structures[k]) for k in todo]
    graphs, where = [], []
    for k, a in zip(todo, arrays, strict=True):
        if not isinstance(a, str):
            graphs.append(AtomGraphData.from_numpy_dict(a))
            where.append(k)

    def run(chunk: list[Any]) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = Batch.from_data_list(chunk).to(device)
            res = model(batch)  # forces come with it (the model's last module); energies are used
        total = res[keys.PRED_TOTAL_ENERGY].detach().reshape(-1)
        n = res[keys.NUM_ATOMS].detach().reshape(-1).to(total.dtype)
        return (total / n).cpu().numpy().astype(float)

    out[where] = forward_in_batches(run, graphs, batch_size, device)
    return out


def chgnet_energies(items: Sequence[Structure | CrystalRow], device: str, batch_size: int,
                    workers: int = 1, progress: bool = False) -> np.ndarray:
    """CHGNet energy per atom of each crystal, by whole-batch forward passes without gradients.

    :func:`crysgen.evaluation.chgnet_batch.predict_energies` instead of CHGNet's own
    ``predict_structure``, whose per-crystal Python loop dominated the cold start's reference
    energies on a GPU (tens of thousands of crystals). The graphs are built first, in ``workers``
    processes (:func:`crysgen.evaluation.chgnet_batch.build_graphs`: the same graphs, so the
    same energies); a crystal CHGNet cannot graph (e.g. isolated atoms) keeps NaN. A failed
    batch is retried one structure at a time (:func:`forward_in_batches`), so one bad crystal
    costs only itself (NaN).

    Args:
        items: pymatgen structures, or CrystalSet rows (``chgnet_batch.crystal_rows``).
        device: where the model runs.
        batch_size: crystals per forward pass.
        workers: processes that build the graphs.
        progress: a progress bar while graphs are built in workers.

    Returns:
        (len(items),) float64 energies per atom (eV/atom), NaN where none.
    """
    from crysgen.evaluation.chgnet_batch import build_graphs, predict_energies
    from crysgen.evaluation.stability import load_chgnet

    model = load_chgnet(device)
    out = np.full(len(items), np.nan)
    built = build_graphs(items, model.graph_converter, workers=workers, progress=progress)
    where = [k for k, g in enumerate(built) if g is not None]
    graphs = [built[k] for k in where]
    out[where] = forward_in_batches(lambda chunk: predict_energies(model, chunk, device, batch_size),
                                    graphs, batch_size, device)
    return out


def static_energies(structures: Sequence[Structure], potential: str, *, device: str = "cpu",
                    batch_size: int = FORWARD_BATCH, workers: int = 1) -> np.ndarray:
    """Static (unrelaxed) energy per atom of each structure with ``potential``.

    Args:
        structures: pymatgen structures (the geometry is used as given).
        potential: ``"chgnet"`` or ``"sevennet"``.
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: structures per forward pass.
        workers: processes that build the potential's graphs.

    Returns:
        (N,) float64 energies in eV/atom; NaN where the potential failed on a structure (or, for
        SevenNet-0, the structure holds an element outside its 89).
    """
    check_potential(potential)
    if potential == "both":
        raise CrysgenError("static_energies takes one potential, not 'both'")
    if not len(structures):
        return np.zeros(0)
    if potential == "chgnet":
        return chgnet_energies(structures, device, batch_size, workers)
    return _sevennet_energies(structures, device, batch_size, workers)
