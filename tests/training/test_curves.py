"""Training curves read across the invocations of one run."""

from __future__ import annotations

import numpy as np

from crysgen.training.curves import plot_training_curves, read_metrics


def _write(run, version, rows):
    path = run / "logs" / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text("iteration,g_loss,step\n" + "".join(f"{i},{v},{i * 6}\n" for i, v in rows))


def test_resumed_rows_replace_those_logged_past_the_checkpoint(tmp_path):
    # the first invocation logged iterations 25..225 and was lost; its checkpoint was at 200,
    # so the second logged 225 again (and on): the curve keeps the second one's 225 only
    _write(tmp_path, 0, [(25, 1.0), (200, 2.0), (225, 9.0)])
    _write(tmp_path, 1, [(225, 3.0), (250, 4.0)])
    x, y = read_metrics(tmp_path)["g_loss"]
    np.testing.assert_array_equal(x, [25, 200, 225, 250])
    np.testing.assert_array_equal(y, [1.0, 2.0, 3.0, 4.0])
    assert set(read_metrics(tmp_path)) == {"g_loss"}  # step and iteration are axes, not curves


def test_versions_are_read_in_numeric_order(tmp_path):
    # version_10 comes after version_9 (a string sort would read it first and drop version_9)
    _write(tmp_path, 9, [(10, 1.0), (20, 2.0)])
    _write(tmp_path, 10, [(30, 3.0)])
    x, _ = read_metrics(tmp_path)["g_loss"]
    np.testing.assert_array_equal(x, [10, 20, 30])
    assert plot_training_curves(tmp_path).stat().st_size > 1000
