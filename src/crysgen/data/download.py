"""`crysgen data download`: fetch the public benchmark CSVs (the only network use in crysgen)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from crysgen.errors import CrysgenError

CDVAE_BASE = "https://raw.githubusercontent.com/txie-93/cdvae/main/data"
DIFFCSP_BASE = "https://raw.githubusercontent.com/jiaor17/DiffCSP/main/data"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Where a public dataset lives and what it is."""

    name: str
    base_url: str
    description: str

    def url(self, split: str, base_url: str | None = None) -> str:
        """URL of one split's CSV."""
        return f"{(base_url or self.base_url).rstrip('/')}/{self.name}/{split}.csv"


DATASETS = {
    "mp_20": DatasetInfo("mp_20", CDVAE_BASE,
                         "MP-20: 45,231 Materials Project crystals, <= 20 atoms (CDVAE)"),
    "perov_5": DatasetInfo("perov_5", CDVAE_BASE, "Perov-5: 18,928 cubic perovskites ABX3 (CDVAE)"),
    "carbon_24": DatasetInfo("carbon_24", CDVAE_BASE,
                             "Carbon-24: 10,153 carbon allotropes, 6-24 atoms (CDVAE)"),
    "mpts_52": DatasetInfo("mpts_52", DIFFCSP_BASE,
                           "MPTS-52: 40,476 MP crystals <= 52 atoms, time split (DiffCSP)"),
}


def download_dataset(
    name: str,
    out_dir: str | Path,
    *,
    base_url: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    overwrite: bool = False,
) -> list[Path]:
    """Download the train/val/test CSVs of a public dataset into ``out_dir/name/``.

    Args:
        name: one of :data:`DATASETS`.
        out_dir: parent folder; files go to ``out_dir/name/{train,val,test}.csv``.
        base_url: override the host (a mirror, or ``file://`` for tests); the environment
            variable ``CRYSGEN_DATA_URL`` does the same.
        timeout: seconds to wait for the server.
        progress: show a progress bar.
        overwrite: download again even if a file exists.

    Returns:
        The paths of the three CSVs.

    Raises:
        CrysgenError: for an unknown name, or when the server cannot be reached (offline),
            with the URL to fetch by hand.
    """
    if name not in DATASETS:
        raise CrysgenError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    info = DATASETS[name]
    base_url = base_url or os.environ.get("CRYSGEN_DATA_URL")
    target = Path(out_dir) / name
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in SPLITS:
        path = target / f"{split}.csv"
        if path.exists() and not overwrite:
            paths.append(path)
            continue
        _fetch(info.url(split, base_url), path, timeout=timeout, progress=progress)
        paths.append(path)
    return paths


def _fetch(url: str, path: Path, *, timeout: float, progress: bool) -> None:
    from tqdm.auto import tqdm

    tmp = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tmp.open("wb") as fh, tqdm(total=total, unit="B", unit_scale=True,
                                            desc=path.name, disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise CrysgenError(
            f"could not download {url} ({reason}). Are you offline? Download the file by hand "
            f"and pass it to `crysgen data prepare`, or set CRYSGEN_DATA_URL to a mirror."
        ) from exc
    tmp.replace(path)
