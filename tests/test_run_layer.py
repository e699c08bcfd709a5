"""The run layer: each component of an experiment built once, one sampling path with one
seeding rule (a study cell is reproducible with ``invdiff sample``), the core's floors."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from invdiff import plugins
from invdiff.cli import main
from invdiff.experiment.config import load_config
from invdiff.experiment.demo import embedded_config_path
from invdiff.experiment.run import Experiment
from invdiff.sampling.posterior import Posterior
from invdiff.study import load_preset
from invdiff.study.runner import (
    StudyRuns,
    cell_calibration,
    held_out_set,
    run_cell,
    train_level,
)
from invdiff.training.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "invdiff"


def test_invdiff_run_builds_each_component_once(tmp_path, monkeypatch, fresh_registry):
    """`invdiff run` on the demo's config (its quick variant: the same components, smaller)
    builds the prior, forward model, noise model, net, sampler and reference once each."""
    built: Counter[str] = Counter()
    create = plugins.Registry.create

    def counting(self, kind, name, **params):
        built[kind] += 1
        return create(self, kind, name, **params)

    monkeypatch.setattr(plugins.Registry, "create", counting)
    cfg = embedded_config_path("demo-elasticity-quick")
    short_mcmc = ('sampling.reference={ name = "inclusion-mcmc", params = { n_ref = 1, '
                  'n_steps = 12, n_walkers = 10 } }')
    assert main(["run", str(cfg), "-q", "--out", str(tmp_path / "run"), "--set",
                 "output.figures=false", "--set", "data.workers=1", "--set", short_mcmc]) == 0
    metrics = len(plugins.available("metric"))  # each asked once whether it applies
    assert built == {"prior": 1, "forward_model": 1, "noise_model": 1, "score_net": 1,
                     "sampler": 1, "reference": 1, "metric": metrics, "objective": 1}


def _toml_value(v):
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()
                                if x is not None) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)  # strings, numbers and booleans are spelled alike in JSON and TOML


def _write_config(cfg, path: Path) -> Path:
    """``cfg`` as a TOML file that loads back to the same config."""
    data = cfg.model_dump(mode="json")
    path.write_text("\n".join(f"{k} = {_toml_value(v)}" for k, v in data.items()
                              if v is not None) + "\n")
    assert load_config(path).model_dump() == cfg.model_dump()
    return path


@pytest.fixture(scope="module")
def smoke_cell(tmp_path_factory):
    """A trained smoke-study model of the reference problem and one cell's samples."""
    runs = tmp_path_factory.mktemp("study")
    preset = load_preset("smoke").model_copy(update={"runs": str(runs)})
    level, net, sampler = preset.problems["reference"].noise_levels[0], "unet", "heun"
    study = StudyRuns(preset, progress=False)
    train_level(study, "reference", level)
    exp = study.get("reference", level, net)
    h = held_out_set(study, "reference", level)
    model = load_model(exp.paths.final, device=preset.device, ema=True)
    cal = cell_calibration(preset, exp, model, sampler, "reference")
    cell = run_cell(preset, model, sampler, h, None, calibration=cal)
    return preset, exp, sampler, cell


@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_study_cell_and_invdiff_sample_give_the_same_samples(smoke_cell, tmp_path, nproc,
                                                               fresh_registry):
    """Same model, sampler, seed and n: `invdiff sample` (1 or 2 processes) reproduces a study
    cell bit for bit, since both seed measurement m's chains by (seed, m)."""
    preset, exp, sampler, cell = smoke_cell
    cfg = exp.cfg.model_copy(deep=True)
    cfg.sampling.sampler.name = sampler
    cfg.sampling.sampler.params = dict(preset.samplers[sampler])
    cfg.sampling.n_samples = preset.samples_for("reference")
    cfg.sampling.seed = preset.seed
    cfg.sampling.reference = None
    cfg.sampling.calibration_pairs = preset.calibration_pairs
    path = _write_config(cfg, tmp_path / "cell.toml")
    args = ["sample", str(path), "-q"] + (["--nproc", str(nproc)] if nproc > 1 else [])
    stored = exp.paths.checkpoints / f"calibration-{sampler}.json"
    written = stored.stat().st_mtime_ns
    assert main(args) == 0
    assert stored.stat().st_mtime_ns == written  # the study's calibration was reused
    sampled = Posterior.load(exp.paths.posterior)
    assert sampled.samples.shape == cell.posterior.samples.shape
    assert torch.equal(sampled.samples, cell.posterior.samples.cpu())
    metrics = json.loads(exp.paths.metrics.read_text())
    assert metrics["world_size"] == nproc
    # the cell's spread calibration, stored beside the checkpoint, is the one applied
    assert metrics["calibration"]["scale"] == cell.metrics["calibration"]["scale"]


def test_import_config_does_not_import_torch():
    code = ("import sys, invdiff.config, invdiff.experiment.config, invdiff.training.config; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("old, new", [("invdiff.posterior", "invdiff.sampling.posterior"),
                                      ("invdiff.pipeline", "invdiff.experiment.run"),
                                      ("invdiff.evaluation.preset", "invdiff.study.preset")])
def test_old_import_paths_warn_and_give_the_moved_module(old, new):
    import importlib

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} has moved to {new}"):
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(new)


def test_documented_entry_points_stay_without_a_warning(recwarn):
    import importlib

    for old, new in (("invdiff.config", "invdiff.experiment.config"),
                     ("invdiff.checkpoint", "invdiff.training.checkpoint")):
        sys.modules.pop(old, None)
        assert importlib.import_module(old) is importlib.import_module(new)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


# -- the house by role ---------------------------------------------------------------------
#: Floors of the core, lowest first: a module may import its own floor and those below.
FLOORS = {"contracts": 0, "reference": 1, "data": 1, "sampling": 1, "training": 2,
          "testing": 3, "evaluation": 3, "experiment": 4, "study": 5, "cli": 6}


def _folder(module: str) -> str:
    """The role of a core module ``invdiff.X[.Y]``: its folder, or contracts at the top."""
    parts = module.split(".")
    if len(parts) > 1 and (CORE / parts[1]).is_dir():
        return parts[1]
    return "cli" if parts[1:] == ["cli"] else "contracts"


def _imports() -> dict[str, set[str]]:
    """Every core module and the core modules it imports (at the top or inside functions)."""
    graph = {}
    for path in CORE.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        pkg = name if rel.name == "__init__" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("invdiff.")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                                    + ([node.module] if node.module else []))
                if base.startswith("invdiff"):
                    deps |= {f"{base}.{a.name}" if (CORE.parent / f"{base}.{a.name}".replace(
                        ".", "/")).with_suffix(".py").exists() else base for a in node.names}
        graph[name] = {d for d in deps if d != name and d != "invdiff"}
    return graph


def test_lower_floors_never_import_higher_ones():
    wrong = [f"{m} ({_folder(m)}) imports {d} ({_folder(d)})"
             for m, deps in _imports().items() for d in deps
             if FLOORS[_folder(d)] > FLOORS[_folder(m)]]
    assert wrong == []


def test_no_import_circle_in_the_core():
    imports = _imports()
    graph = {m: {d for d in deps if d in imports} for m, deps in imports.items()}
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        seen[m] = 1
        for d in graph.get(m, ()):
            if seen.get(d) == 1:
                return stack + [m, d]
            if d not in seen and (cycle := visit(d, stack + [m])):
                return cycle
        seen[m] = 2
        return None

    for m in graph:
        if m not in seen:
            assert visit(m, []) is None


def test_no_core_module_is_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in CORE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_every_config_in_the_package_loads_with_the_new_layout():
    for path in sorted((CORE / "configs").glob("*.toml")):
        assert load_config(path).name
    assert np.all([Experiment(load_config(p)).paths.final.name == "final.pt"
                   for p in (CORE / "configs").glob("*.toml")])
