from __future__ import annotations

import pytest

from crysgen import CrysgenError
from crysgen.data.download import download_dataset


def test_download_from_a_mirror(tmp_path):
    mirror = tmp_path / "mirror" / "perov_5"
    mirror.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (mirror / f"{split}.csv").write_text(f"material_id,cif\n{split},x\n")
    paths = download_dataset("perov_5", tmp_path / "out",
                             base_url=(tmp_path / "mirror").as_uri(), progress=False)
    assert [p.name for p in paths] == ["train.csv", "val.csv", "test.csv"]
    assert paths[1].read_text().splitlines()[1] == "val,x"
    assert not list((tmp_path / "out").rglob("*.part"))


def test_offline_gives_a_clear_message(tmp_path):
    with pytest.raises(CrysgenError, match="offline"):
        download_dataset("mp_20", tmp_path, base_url="http://127.0.0.1:9", timeout=2,
                         progress=False)
    assert not list(tmp_path.rglob("*.csv*"))


def test_unknown_dataset():
    with pytest.raises(CrysgenError, match="unknown dataset"):
        download_dataset("qm9", "x")
