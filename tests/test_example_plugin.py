"""The worked example of docs/writing-plugins.md, installed (editable) into a private folder
and exercised through its entry point in a fresh interpreter, so nothing leaks into the rest
of the test session."""

from __future__ import annotations

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
    assert out["row"]["kinds"] == ["noise_model", "prior"]
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
