"""The learning-curve benchmark script (benchmarks/learning_curves.py)."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest

from invdiff.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_curves.py"


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("learning_curves", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_and_snapshots(lc):
    assert lc.snapshot_steps(600) == [150, 300, 600]
    assert lc.snapshot_steps(2) == [1, 2]
    assert lc.parse_recipe("edm") == ("edm", lc.RECIPES["edm"])
    assert lc.parse_recipe("mine:training.lr=1e-3,training.batch_size=32") == (
        "mine", ["training.lr=1e-3", "training.batch_size=32"])
    with pytest.raises(ConfigError, match="named recipes: sigma2, edm"):
        lc.parse_recipe("edmm")


@pytest.mark.slow
def test_smoke_curves_end_to_end(lc, tmp_path):
    """Two recipes x two seeds x three snapshots on the smoke preset; the same seed with the
    same recipe trains the same model, so a rerun reads every number back."""
    args = ["--preset", "smoke", "--problem", "reference", "--steps", "4", "--runs",
            str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "-q"]
    assert lc.main(args) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "curves.csv").open()))
    assert [(r["recipe"], r["seed"], r["step"]) for r in rows] == [
        (rc, s, k) for rc in ("sigma2", "edm") for s in ("0", "1") for k in ("1", "2", "4")]
    for r in rows:
        assert all(math.isfinite(float(r[m])) for m in lc.METRICS)
    first = (tmp_path / "out" / "curves.csv").read_text()
    assert lc.main(args) == 0
    assert (tmp_path / "out" / "curves.csv").read_text() == first
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
