"""Peers of the benchmark study (invdiff.study.peer): the registry, the preset's [peer]
section, a missing library or a failing peer recorded instead of a row, one row per problem
scored like the cells and cached; the real peers (sbi, BayesFlow) on the smoke preset (slow)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from invdiff.cli import main
from invdiff.errors import ConfigError
from invdiff.study import study
from invdiff.study.peer import PEERS, Peer, PeerOutput, PeerTask
from invdiff.study.preset import load_preset

PROBLEMS = ["reference", "elasticity"]


class FakeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spread: float = 1.0


def _fake_run(calls: list[PeerTask]):
    def run(task: PeerTask) -> PeerOutput:
        """Samples around the training fields' mean, as wide as ``spread`` times their std."""
        calls.append(task)
        g = torch.Generator().manual_seed(task.seed)
        mean, std = task.train_x.mean(0), task.train_x.std(0)
        z = torch.randn(len(task.y), task.n_samples, *mean.shape, generator=g)
        return PeerOutput(samples=mean + task.params.spread * std * z, nfe=1, train_seconds=0.1,
                          seconds=0.2, net="fake-net", sampler="fake-sampler",
                          description="draws from the prior's moments",
                          detail=f"{len(task.train_x)} pairs")
    return run


@pytest.fixture
def fake(monkeypatch):
    calls: list[PeerTask] = []
    monkeypatch.setitem(PEERS, "fake", Peer("fake", "Fake peer", FakeParams, lambda: None,
                                            _fake_run(calls)))
    monkeypatch.setitem(PEERS, "absent", Peer(
        "absent", "Absent peer", FakeParams, lambda: "Absent peer skipped: its library is "
        "not importable", _fake_run(calls)))

    def broken(task: PeerTask) -> PeerOutput:
        raise RuntimeError("diverged")

    monkeypatch.setitem(PEERS, "broken", Peer("broken", "Broken peer", FakeParams,
                                              lambda: None, broken))
    return calls


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_peer_section_names_peers_problems_and_settings(fake):
    p = load_preset("smoke", ['peer.peers=["fake", "sbi-npse"]', 'peer.problems=["oce"]',
                              "peer.fake.spread=0.5", "peer.sbi-npse.steps=7"])
    assert p.peer.peers == ["fake", "sbi-npse"] and p.peer.problems_of(p) == ["oce"]
    assert p.peer.params("fake").spread == 0.5 and p.peer.params("sbi-npse").steps == 7
    assert p.peer.params("bayesflow-fm").subnet == "unet"  # defaults where the preset is silent
    everywhere = load_preset("smoke", ['peer.peers=["fake"]', "peer.problems=[]"])
    assert everywhere.peer.problems_of(everywhere) == []
    unset = load_preset("smoke", ['peer={ peers = ["fake"] }'])
    assert unset.peer.problems_of(unset) == list(unset.problems)  # unset: every problem


def test_the_older_single_problem_form_still_reads(fake):
    p = load_preset("smoke", ['peer={ problem = "elasticity", max_epochs = 4, steps = 9 }'])
    assert p.peer.peers == ["sbi-npse"] and p.peer.problems_of(p) == ["elasticity"]
    assert (p.peer.params("sbi-npse").max_epochs, p.peer.params("sbi-npse").steps) == (4, 9)


@pytest.mark.parametrize("override, message", [
    ('peer.peers=["nope"]', "unknown peer(s) nope; known peers: sbi-npse, bayesflow-fm"),
    ('peer.problems=["moon"]', "peer.problems: moon not among the problems"),
    ("peer.fake.width=3", "width"),
    ('peer={ problem = "oce", problems = ["oce"] }', "not both"),
])
def test_a_bad_peer_section_is_named(fake, override, message):
    with pytest.raises(ConfigError, match="peer") as err:
        load_preset("smoke", ['peer.peers=["fake"]', override])
    assert message in str(err.value)


def test_peers_add_one_row_per_problem_and_record_why_one_is_missing(fake, tmp_path):
    kw = dict(out=tmp_path / "out", runs=tmp_path / "runs", only=PROBLEMS, peers_only=True,
              quiet=True)
    over = ['peer.peers=["fake", "absent", "broken"]', "peer.fake.spread=0.5"]
    result = study("smoke", overrides=over, **kw)
    assert [t.problem for t in fake] == PROBLEMS  # trained once per problem, on its own pairs
    assert fake[0].train_x.shape[0] == fake[0].train_y.shape[0] == 64
    rows = _rows(tmp_path / "out" / "results.csv")
    assert [(r["problem"], r["net"], r["peer"]) for r in rows] == [
        (p, "fake-net", "fake") for p in PROBLEMS]  # --peers-only: no cSDM cell
    for r, spec in zip(rows, ("reference", "elasticity"), strict=True):
        assert float(r["noise_test"]) == load_preset("smoke").problems[spec].noise_levels[0]
        assert r["reference"] and float(r["std_ratio"]) > 0 and r["nfe"] == "1"
        assert float(r["seconds"]) == pytest.approx(0.2 / int(r["n_test"]))
    assert len(result.calibration) == 2
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Peer: Fake peer and Absent peer and Broken peer on the same simulations" in md
    assert "Absent peer skipped: its library is not importable" in md
    assert "Broken peer on reference failed: RuntimeError: diverged" in md
    assert "Fake peer (`fake`): draws from the prior's moments" in md
    assert "| elasticity | fake-net | fake-sampler |" in md

    # a rerun reads the cached cells back; other settings train again
    study("smoke", overrides=over, **kw)
    assert len(fake) == 2
    again = _rows(tmp_path / "out" / "results.csv")
    assert [{k: v for k, v in r.items() if r[k] != a[k] and k != "ref_seconds"}
            for r, a in zip(rows, again, strict=True)] == [{}, {}]  # the same numbers
    study("smoke", overrides=['peer.peers=["fake"]', "peer.fake.spread=2"], **kw)
    assert len(fake) == 4
    wide = _rows(tmp_path / "out" / "results.csv")
    assert float(wide[0]["std_ratio"]) > 3 * float(rows[0]["std_ratio"])

    # the command line takes one of --no-peer and --peers-only
    with pytest.raises(SystemExit):
        main(["study", "smoke", "--no-peer", "--peers-only"])


@pytest.mark.slow
def test_the_real_peers_on_every_problem_of_the_smoke_preset(tmp_path):
    from invdiff.study.peer import flow, npse

    for why in (npse.available(), flow.available()):
        if why is not None:
            pytest.skip(why)
    root = logging.getLogger()
    handlers, grad = list(root.handlers), torch.is_grad_enabled()
    out = tmp_path / "out"
    assert main(["study", "smoke", "--out", str(out), "--runs", str(tmp_path / "runs"),
                 "--peers-only", "-q"]) == 0
    rows = _rows(out / "results.csv")
    got = {(r["problem"], r["peer"], r["net"]) for r in rows}
    assert got == {(p, peer, net) for p in ("reference", "elasticity", "oce")
                   for peer, net in (("sbi-npse", "sbi-npse-mlp"),
                                     ("bayesflow-fm", "bayesflow-fm-unet"))}
    for r in rows:
        assert float(r["std_ratio"]) > 0 and 0 <= float(r["coverage_90"]) <= 1
        assert int(r["nfe"]) == (20 if r["peer"] == "sbi-npse" else 12)
        assert float(r["seconds"]) > 0 and float(r["train_seconds"]) > 0
    md = (out / "results.md").read_text()
    assert "BayesFlow flow matching (`bayesflow-fm`): BayesFlow 2." in md
    assert "U-Net subnet" in md and "failed" not in md
    # importing BayesFlow switches autograd off and configures logging: both are put back
    assert torch.is_grad_enabled() == grad and root.handlers == handlers
