"""Every default is written once in the code, and the docs' tables of defaults agree with it.

The code side: the parameter models are the source of truth (``check_param_defaults`` holds
each factory's signature to its model); shared defaults live in :mod:`invdiff.params`. The
docs side: each table row ``| `name` | default | ... |`` under the headings below is read and
compared with the model's default, so a changed default cannot leave the docs behind.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from invdiff import params
from invdiff.experiment.config import SamplingConfig
from invdiff.plugins import get_registry
from invdiff.sampling.posterior import sample_posterior
from invdiff.training import TrainingConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
WORDS = {"true": True, "false": False, "True": True, "False": False, "None": None}


def _table_after(path: Path, heading: str) -> dict[str, str]:
    """``{name: default cell}`` of the first table after the heading line ``heading``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and heading in line)
    rows, seen_table = {}, False
    for line in lines[start + 1:]:
        if line.startswith("|"):
            seen_table = True
            cells = [c.strip() for c in line.strip("|").split("|")]
            names = re.findall(r"`(\w+)`", cells[0])
            if names and len(cells) > 1:
                values = _split_top(cells[1]) if len(names) > 1 else [cells[1]]
                rows.update(zip(names, values, strict=False))
        elif seen_table:
            break
    return rows


def _split_top(text: str) -> list[str]:
    """``"1e-3, (0.9, 0.999), 0"`` -> its top-level comma-separated items."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*out, cur.strip()]


def _value(cell: str):
    """A documented default as a Python value (backticks and quotes off)."""
    cell = cell.strip().strip("`").strip()
    first = cell.split(" ")[0].rstrip(",")
    for token in (cell, first):
        if token in WORDS:
            return WORDS[token]
        try:
            return ast.literal_eval(token)
        except (ValueError, SyntaxError):
            pass
    return first.strip('"')


def _same(documented, default) -> bool:
    if default is None and isinstance(documented, str):
        return True  # a None default documented by what it stands for (e.g. "NCSNv2 rule")
    if isinstance(default, tuple | list):
        return list(documented) == list(default)
    if isinstance(default, float) and isinstance(documented, int | float):
        return float(documented) == pytest.approx(default)
    return documented == default


def _field_defaults(model) -> dict:
    return {k: (f.default_factory() if f.default_factory else f.default)
            for k, f in model.model_fields.items()}


@pytest.mark.parametrize("doc, heading, model", [
    ("training.md", "Options (`TrainingConfig`", TrainingConfig),
    ("samplers.md", "Annealed Langevin dynamics", "annealed-langevin"),
    ("samplers.md", "Predictor-corrector", "predictor-corrector"),
])
def test_the_docs_tables_of_defaults_match_the_code(doc, heading, model):
    if isinstance(model, str):
        model = get_registry().get("sampler", model).params
    rows = _table_after(DOCS / doc, heading)
    defaults = _field_defaults(model)
    documented = {k: v for k, v in rows.items() if k in defaults}
    assert len(documented) >= 3, f"no table of {model.__name__} defaults under {heading!r}"
    wrong = {k: (v, defaults[k]) for k, v in documented.items()
             if not _same(_value(v), defaults[k])}
    assert wrong == {}


def test_sampling_defaults_are_the_shared_ones():
    """The config's [sampling] section and sample_posterior share one set of defaults."""
    import inspect

    sig = inspect.signature(sample_posterior).parameters
    cfg = SamplingConfig()
    assert cfg.sampler.name == sig["sampler"].default == params.DEFAULT_SAMPLER
    assert cfg.n_samples == sig["n"].default == params.DEFAULT_N_SAMPLES
    assert cfg.threads == sig["threads"].default == TrainingConfig().threads
    assert params.DEFAULT_SAMPLER in get_registry().available("sampler")


def test_langevin_steps_per_level_default_is_the_ladder_rules():
    import inspect

    from invdiff.sampling.sigmas import suggest

    model = get_registry().get("sampler", "annealed-langevin").params
    assert model.model_fields["steps_per_level"].default == params.DEFAULT_STEPS_PER_LEVEL
    assert (inspect.signature(suggest).parameters["steps_per_level"].default
            == params.DEFAULT_STEPS_PER_LEVEL)


def test_every_registered_factory_has_its_models_defaults():
    """check_param_defaults over every installed component of every kind, built-ins too."""
    from invdiff.testing import check_param_defaults

    check_param_defaults()
