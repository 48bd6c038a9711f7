from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
from scipy.stats import binom

from crysgen.cli import main
from crysgen.errors import CrysgenError
from crysgen.evaluation.comparison import compare_reports, paired_counts


def _report(folder, outcomes, sites, column="cov_precise", reverse=False):
    """A structures.csv with one row per sample: id, num_sites and the yes/no column ('' = none),
    in id order or (reverse) the other way round."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "structures.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "formula", "num_sites", column])
        w.writeheader()
        rows = list(enumerate(zip(outcomes, sites, strict=True)))
        for i, (x, n) in rows[::-1] if reverse else rows:
            w.writerow({"id": f"sample_{i:06d}", "formula": "C", "num_sites": n,
                        column: "" if x is None else str(bool(x))})
    return folder


def test_paired_counts_is_mcnemars_exact_test():
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1, 0], dtype=bool)
    k = paired_counts(a, b)
    # discordant: 5 yes only for A, 1 only for B; concordant pairs do not enter the test
    assert (k.only_a, k.only_b, k.n) == (5, 1, 10)
    assert k.rate_a == pytest.approx(0.7) and k.rate_b == pytest.approx(0.3)
    assert k.p_value == pytest.approx(2 * binom.cdf(1, 6, 0.5))  # 0.21875
    assert paired_counts(b, a).p_value == pytest.approx(k.p_value)
    assert paired_counts(a, a).p_value == 1.0


def test_only_discordant_pairs_decide_and_rows_pair_by_id(tmp_path):
    # equal rates (50 %), every pair discordant, split evenly: no difference
    a = _report(tmp_path / "a", [1] * 50 + [0] * 50, [6] * 100)
    b = _report(tmp_path / "b", [0] * 50 + [1] * 50, [6] * 100)
    c = compare_reports(a, b)
    assert (c.overall.only_a, c.overall.only_b) == (50, 50) and c.overall.p_value == pytest.approx(1.0)
    # A wins 30 crystals B loses and loses none: p = 2 * 0.5**30
    d = _report(tmp_path / "d", [1] * 80 + [0] * 20, [6] * 100)
    e = _report(tmp_path / "e", [1] * 50 + [0] * 50, [6] * 100)
    c = compare_reports(d, e)
    assert (c.overall.only_a, c.overall.only_b) == (30, 0)
    assert c.overall.p_value == pytest.approx(2 * 0.5 ** 30)
    # a gzipped copy of a report's structures.csv reads the same
    (tmp_path / "e.csv.gz").write_bytes(gzip.compress((e / "structures.csv").read_bytes()))
    assert compare_reports(d, tmp_path / "e.csv.gz") == c
    # the same samples listed the other way round pair by id, not by row
    r = compare_reports(d, _report(tmp_path / "r", [1] * 50 + [0] * 50, [6] * 100, reverse=True))
    assert (r.overall.only_a, r.overall.only_b) == (30, 0)


def test_by_sites_bins_and_dropped_rows(tmp_path):
    a = _report(tmp_path / "a", [1, 1, 0, None, 1, 0], [6, 6, 10, 10, 14, 14])
    b = _report(tmp_path / "b", [0, 1, 1, 1, 1, 0], [6, 6, 10, 10, 14, 15])
    c = compare_reports(a, b)
    assert c.dropped == 1 and c.overall.n == 5
    assert list(c.by_sites) == ["5-8", "9-12", "13-16"]
    assert (c.by_sites["5-8"].only_a, c.by_sites["5-8"].only_b) == (1, 0)
    assert (c.by_sites["9-12"].n, c.by_sites["9-12"].only_b) == (1, 1)
    assert c.same_sites == pytest.approx(4 / 5)
    # an undecoded sample (0 sites, not valid) counts overall and in no bin, the others keep theirs
    v = compare_reports(_report(tmp_path / "va", [0, 1, 1], [0, 6, 10], column="struct_valid"),
                        _report(tmp_path / "vb", [0, 0, 1], [0, 6, 10], column="struct_valid"),
                        column="struct_valid")
    assert v.overall.n == 3 and list(v.by_sites) == ["5-8", "9-12"]
    assert v.by_sites["5-8"].only_a == 1


def test_unpaired_or_malformed_reports_are_refused(tmp_path):
    a = _report(tmp_path / "a", [1, 0, 1], [6, 6, 6])
    with pytest.raises(CrysgenError, match="same samples"):
        compare_reports(a, _report(tmp_path / "b", [1, 0], [6, 6]))
    with pytest.raises(CrysgenError, match=r"no structures\.csv"):
        compare_reports(a, tmp_path / "missing")
    with pytest.raises(CrysgenError, match="no column"):
        compare_reports(a, _report(tmp_path / "c", [1, 0, 1], [6, 6, 6], column="struct_valid"))
    with pytest.raises(CrysgenError, match="choose one of"):
        compare_reports(a, a, column="density_g_cm3")
    bad = _report(tmp_path / "d", [1, 0, 1], [6, 6, 6])
    text = (bad / "structures.csv").read_text().replace("True", "0.93")
    (bad / "structures.csv").write_text(text)
    with pytest.raises(CrysgenError, match="not yes/no"):
        compare_reports(a, bad)


def test_cli_prints_and_writes_json(tmp_path, capsys):
    a = _report(tmp_path / "a", [1] * 8 + [0] * 2, [6] * 5 + [10] * 5)
    b = _report(tmp_path / "b", [1] * 3 + [0] * 7, [6] * 5 + [10] * 5)
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "80.00%" in printed and "30.00%" in printed
    d = json.loads(out.read_text())
    assert d["overall"]["only_a"] == 5 and d["overall"]["only_b"] == 0
    assert set(d["by_sites"]) == {"5-8", "9-12"}
    assert main(["compare", str(a), str(b), "--json", str(tmp_path / "cmp.txt")]) == 2
    assert "must end in .json" in capsys.readouterr().err
