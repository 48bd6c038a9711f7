"""The published figures benchmarks compare with: one data file, every figure with its source."""

from __future__ import annotations

import json
from pathlib import Path

PUBLISHED = Path(__file__).resolve().parents[1] / "benchmarks" / "published.json"


def test_every_published_row_has_a_source_and_the_right_shape():
    data = json.loads(PUBLISHED.read_text())
    dng = data["dng"]
    assert dng["source"]
    for dataset, rows in dng["rows"].items():
        for model, row in rows.items():
            assert len(row) == len(dng["columns"]), (dataset, model)
            assert all(v is None or isinstance(v, (int, float)) for v in row)
    for row in data["csp"]["rows"]:
        assert {"dataset", "k", "model", "match_rate", "rmse", "source"} <= set(row)
        assert 0 <= row["match_rate"] <= 100 and row["source"]
    assert set(data["crystens_tables_1_2"]["rows"]) == {"gan", "wgan", "diffusion"}
    assert data["crystens_tables_1_2"]["source"] and data["properties"]["source"]
    court = data["court2020_voxel"]
    assert court["source"] and set(court["rows"]) == {"reconstruction", "random_validity", "funnel_percent"}
    assert "Cond-DFC-VAE (Court et al.)" in dng["rows"]["perov_5"]  # benchmarks/voxel.py reads its row
