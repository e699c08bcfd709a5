"""The results pages made from result files (benchmarks/results_pages.py): each page renders
from small synthetic result files, its numbers come from them, and ``--check`` fails on a page
that no longer matches its files."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "results_pages.py"


@pytest.fixture(scope="module")
def rp():
    return SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="results_pages"))


def _run(**data) -> dict:
    return {"command": "python bench.py", "threads": "OMP_NUM_THREADS=1",
            "machine": "x86_64, 2 cores", "date": "2030-01-01", **data}


def _setting(label, sampler, nfe, std_ratio, recursion=None):
    return {"label": label, "sampler": sampler, "nfe": nfe, "seconds": 0.5, "mean_error": 0.03,
            "std_ratio": std_ratio, "max_std_error": 0.05, "recursion": recursion, "w2": 0.11}


RESULTS = {
    "samplers.json": [_run(
        samples_per_measurement=10, measurements=2, figure="samplers_accuracy.png",
        goals=[["heun", 0.02, 50], ["dpm-2m", 0.05, 25]],
        settings=[_setting("exact (MC floor)", "exact", 0, 0.9981),
                  _setting("Heun N=25", "heun", 50, 1.0123,
                           {"mean": 1.0111, "max_error": 0.0222}),
                  _setting("DPM-2M N=24", "dpm-2m", 25, 1.0777)],
        recursion_16=[{"label": "Heun N=25", "nfe": 50,
                       "recursion": {"mean": 1.0333, "max_error": 0.044}}],
        ladder_only=[{"levels": 20, "label": "Heun N=25", "on_ladder": True, "nfe": 38,
                      "mean_error": 0.029, "std_ratio": 1.0154, "max_std_error": 0.063}])],
    "exact-sampler-floor.json": [_run(
        preset="cpu", problem="reference", n_test=8, repeats=20,
        rows=[{"samples": 64, "std_ratio": [0.995, 0.004], "std_corr": [0.8101, 0.009],
               "coverage_90": [0.887, 0.004], "mean_err_std": [0.125, 0.003],
               "predicted_std_ratio": 0.996, "predicted_std_corr": 0.81}])],
    "fem.json": [_run(compression=0.01, fields=4, repeats=2, rows=[
        {"N": 32, "dofs": 2178, "ours": 250.0, "ours_batch": 260.0, "skfem": 20.0,
         "speedup": 12.5, "maxdiff": 4e-16}]),
        _run(compression=0.01, fields=4, repeats=2, rows=[
            {"N": 32, "dofs": 2178, "ours": 300.0, "ours_batch": 310.0, "skfem": 20.0,
             "speedup": 15.0, "maxdiff": 4e-16}])],
    "threads.json": [_run(title="Idle machine", rows=[
        {"key": "fem-limited", "workload": "FEM solve", "setting": "1 thread", "idle": 0.01,
         "loaded": 0.011, "loaded_over_idle": 1.1},
        {"key": "fem-default", "workload": "FEM solve", "setting": "default", "idle": 0.02,
         "loaded": 0.066, "loaded_over_idle": 3.3}])],
    "simulate.json": [_run(title="Quiet machine", rounds=3, rows=[
        {"problem": "elasticity-32", "pairs": 512, "workers": 1, "mean_seconds": 2.0,
         "pairs_per_s": 256.0},
        {"problem": "elasticity-32", "pairs": 512, "workers": 2, "mean_seconds": 1.25,
         "pairs_per_s": 409.6}])],
    "scale-out.json": [_run(rows=[
        {"work": "dask-start", "seconds": 20.0},
        {"work": "simulate", "grid": 32, "pairs": 512, "mode": "one", "pairs_per_s": 100.0,
         "ratio": 1.0},
        {"work": "simulate", "grid": 32, "pairs": 512, "mode": "pool", "pairs_per_s": 150.0,
         "ratio": 1.5},
        {"work": "simulate", "grid": 32, "pairs": 512, "mode": "dask", "pairs_per_s": 50.0,
         "ratio": 0.5},
        {"work": "train", "grid": 32, "batch": 32, "mode": "threads-1", "examples_per_s": 10.0,
         "ratio": 1.0},
        {"work": "train", "grid": 32, "batch": 32, "mode": "threads-2", "examples_per_s": 2.5,
         "ratio": 0.25},
        {"work": "train", "grid": 32, "batch": 32, "mode": "ddp", "examples_per_s": 17.0,
         "ratio": 1.7}])],
}

#: numbers each page must show, computed from RESULTS above
EXPECTED = {
    "samplers.md": ["| Heun N=25 | 50 | 0.50 | 0.030 | 1.0123 | 0.050 | 1.0111 / 0.022 | 0.1100 |",
                    "* heun: std within 2% at <= 50 nfe: Heun N=25 (50 nfe, std ratio 1.0123",
                    "* dpm-2m: std within 5% at <= 25 nfe: none", "20 chains per setting",
                    "| 64 | 0.995 ± 0.004 | 0.810 ± 0.009 |", "1.0333 / 0.044"],
    "fem.md": ["| 32 | 2178 | 300.0 | 310.0 | 20.0 | 15.0x | 4.0e-16 |",
               "| 1 | 2030-01-01 | 12.5x |",
               "makes the solve 2.0x faster idle and 6.0x faster beside the busy process"],
    "simulate.md": ["| 512 | 2 | 1.250 s | 410 | 1.60x |",
                    "the FEM at N = 32 ran 1.60x faster with 2 workers"],
    "scale-out.md": ["trained 1.70x faster than one process", "was 4.0x slower than with one",
                     "1.50x the rate of one process at N = 32", "start-up (20 s here"],
}


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, runs in RESULTS.items():
        (folder / name).write_text(json.dumps({"runs": runs}))
    return folder


@pytest.mark.parametrize("page", sorted(EXPECTED))
def test_page_renders_the_numbers_of_its_files(rp, data, page):
    text = rp.render(page, data)
    assert text.startswith("# ")
    assert "do not edit by hand" in text
    for files in rp.PAGES[page][1]:
        assert f"docs/results/data/{files}" in text
    assert "* Command: `python bench.py`" in text and "* Machine: x86_64, 2 cores" in text
    for needle in EXPECTED[page]:
        assert needle in text, needle


def test_check_detects_a_stale_page(rp, data, tmp_path):
    args = ["--data", str(data), "--pages", str(tmp_path)] + sum(
        (["--page", name] for name in rp.PAGES), [])
    assert rp.main(["--check", *args]) == 1  # no pages yet
    assert rp.main(args) == 0
    assert rp.main(["--check", *args]) == 0
    sim = json.loads((data / "simulate.json").read_text())
    sim["runs"][0]["rows"][1]["mean_seconds"] = 1.0  # a new measurement, page not rewritten
    (data / "simulate.json").write_text(json.dumps(sim))
    assert rp.main(["--check", *args]) == 1
    assert rp.main(args) == 0 and rp.main(["--check", *args]) == 0
    assert "2.00x" in (tmp_path / "simulate.md").read_text()


def test_save_run_appends_and_keeps_provenance(rp, tmp_path):
    path = tmp_path / "r.json"
    rp.save_run(path, rp.new_run("one thread", "a machine", rows=[1]))
    rp.save_run(path, rp.new_run("one thread", "a machine", rows=[2]), append=True)
    runs = rp.read_runs(path)
    assert [r["rows"] for r in runs] == [[1], [2]]
    assert {"command", "threads", "machine", "date"} <= set(runs[0])
    rp.save_run(path, rp.new_run("one thread", "a machine", rows=[3]))
    assert [r["rows"] for r in rp.read_runs(path)] == [[3]]


def test_committed_pages_match_their_result_files(rp):
    for name in rp.PAGES:
        assert (rp.RESULTS / name).read_text() == rp.render(name), (
            f"docs/results/{name} is stale: run python benchmarks/results_pages.py")
