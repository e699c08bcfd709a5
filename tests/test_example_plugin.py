"""The worked example of docs/writing-plugins.md, installed (editable) into a private folder
and exercised through its entry point in a fresh interpreter, so nothing leaks into the rest
of the test session."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "invdiff-example"

CHECK = """
import json, site, sys
site.addsitedir(sys.argv[1])
import torch, invdiff
from invdiff.plugins import plugin_table
from invdiff.testing import check_prior, check_noise_model
prior = invdiff.create("prior", "example-disc", n=12, radius=(0.2, 0.3))
x = check_prior(prior)
noise = invdiff.create("noise_model", "example-laplace", scale=0.5)
y = check_noise_model(noise, torch.zeros(4, 1, 64, 64))
try:
    invdiff.create("prior", "example-disc", n=2)
    bad = "accepted"
except invdiff.ConfigError as exc:
    bad = str(exc)
rows = {r["name"]: r for r in plugin_table()}
print(json.dumps({"row": rows["example"], "std": float(y.std()), "bad": bad,
                  "values": sorted({round(v, 3) for v in x.flatten().tolist()})[:1]}))
"""


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--target", str(target), "-e", str(EXAMPLE)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"pip install of the example plugin failed:\n{proc.stderr}")
    return target


def test_example_plugin_through_entry_points(site_dir):
    proc = subprocess.run([sys.executable, "-c", CHECK, str(site_dir)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["row"]["distribution"] == "invdiff-example"
    assert out["row"]["kinds"] == ["forward_model", "noise_model", "prior", "sampler"]
    # Laplace(0, b) has std sqrt(2) b
    assert abs(out["std"] - 2**0.5 * 0.5) < 0.02
    assert "n: Input should be greater than or equal to 4" in out["bad"]
    assert out["values"] == [1.0]  # background value of the disc prior


def test_cli_lists_the_example_plugin(site_dir):
    code = ("import site, sys; site.addsitedir(sys.argv[1]); from invdiff.cli import main; "
            "main(['plugins', '--json'])")
    proc = subprocess.run([sys.executable, "-c", code, str(site_dir)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = [p["name"] for p in json.loads(proc.stdout)["plugins"]]
    assert "example" in names and "reference" in names


EULER = """
import json, site, sys
site.addsitedir(sys.argv[1])
import torch, invdiff
from invdiff.reference import make_problem
from invdiff.sampling.sigmas import geometric
prob = make_problem(n=4, mask_fraction=1.0, noise_level=0.1)
y = prob.forward_model(prob.prior.sample(1, torch.Generator().manual_seed(0)))
sampler = invdiff.create("sampler", "example-euler", progress=False)
res = sampler.sample(prob.posterior.score_fn(), y, geometric(20.0, 0.01, 200), 2000,
                     generator=torch.Generator().manual_seed(1))
s, post = res.samples[0].double(), prob.posterior
z = (s.mean(0) - post.mean(y.double())[0]) / (post.std / 2000**0.5)  # standard errors
print(json.dumps({"nfe": res.nfe, "z_max": float(z.abs().max()),
                  "std_ratio": (s.std(0) / post.std).flatten().tolist()}))
"""


def test_example_sampler_draws_the_exact_posterior(site_dir):
    """With the exact score of the linear-Gaussian problem, the probability-flow Euler sampler
    reproduces the closed-form posterior: mean to Monte-Carlo error, std per pixel to 10 %
    (Euler's discretisation error is far below both at 200 levels)."""
    proc = subprocess.run([sys.executable, "-c", EULER, str(site_dir)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["nfe"] == 200 + 1  # one score evaluation per level + the final denoising
    assert out["z_max"] < 4.5, out  # 16 pixels, each within 4.5 standard errors
    assert all(abs(r - 1) < 0.1 for r in out["std_ratio"]), out["std_ratio"]


STUDY = """
import site, sys
site.addsitedir(sys.argv[1])
from invdiff.cli import main
sys.exit(main(["study", "smoke", "--out", sys.argv[2], "--runs", sys.argv[3], "-q",
               "--set", "samplers.example-euler={}", *sys.argv[4:]]))
"""


def _study_rows(site_dir, tmp_path, *extra):
    out, runs = tmp_path / "out", tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-c", STUDY, str(site_dir), str(out), str(runs),
                           *extra], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _check_euler_rows(rows):
    samplers = {r["sampler"] for r in rows}
    assert samplers == {"annealed-langevin", "predictor-corrector", "heun", "dpm-2m",
                        "example-euler"}
    euler = next(r for r in rows if r["sampler"] == "example-euler")
    assert euler["reference"] == "linear-gaussian" and int(euler["nfe"]) == 4 + 1
    assert 0 <= float(euler["coverage_90"]) <= 1 and float(euler["std_ratio"]) > 0


def test_example_sampler_joins_the_study_with_one_set(tmp_path, monkeypatch, fresh_registry):
    """The study with the example plugin's sampler added by one override (one problem and
    net, in this process: the plugin module registered like an entry point)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import importlib

    from invdiff import plugins
    from invdiff.study import study

    plugins.get_registry().add_plugin(importlib.import_module("invdiff_example.plugin"),
                                      name="example", distribution="invdiff-example")
    study("smoke", out=tmp_path / "out", runs=tmp_path / "runs", only=["reference"],
          nets=["unet"], peer=False, quiet=True, overrides=["samplers.example-euler={}"])
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        _check_euler_rows(list(csv.DictReader(fh)))


@pytest.mark.slow
def test_example_sampler_joins_the_study_from_its_entry_point(site_dir, tmp_path):
    """The same through the installed entry point and the command line."""
    _check_euler_rows(_study_rows(site_dir, tmp_path, "--only", "reference", "--nets", "unet",
                                  "--no-peer"))


@pytest.mark.slow
def test_example_sampler_in_the_whole_smoke_study(site_dir, tmp_path):
    rows = _study_rows(site_dir, tmp_path)
    by_problem = {}
    for r in rows:
        by_problem.setdefault(r["problem"], set()).add(r["sampler"])
    for problem in ("reference", "elasticity", "oce"):
        assert "example-euler" in by_problem[problem]
        assert {"annealed-langevin", "predictor-corrector"} <= by_problem[problem]


def test_the_guide_shows_the_example_source_as_it_is():
    """docs/writing-plugins.md quotes the example's params, plugin and components modules."""
    guide = (ROOT / "docs" / "writing-plugins.md").read_text()
    for name in ("params", "plugin", "components"):
        source = (EXAMPLE / "invdiff_example" / f"{name}.py").read_text()
        assert f"```python\n{source}```" in guide, name
