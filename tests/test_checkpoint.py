"""Checkpoints: round trip to a ScoreModel through the registry, atomic writes, weights_only
loading, and a clear CheckpointError for missing, corrupt, truncated or mismatched files."""

from __future__ import annotations

import json

import pytest
import torch

import invdiff.plugins
from invdiff.errors import CheckpointError, ConfigError
from invdiff.reference import make_problem
from invdiff.sampling.sigmas import geometric
from invdiff.training import Trainer, TrainingConfig
from invdiff.training.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint
from tests.nets import PLUGIN, TinyScoreNet, gaussian_datasets

SIGMAS = geometric(3.0, 0.1, 5)
SPEC = {"name": "tiny-mlp", "params": {"hidden": 16, "seed": 4}}
EXPERIMENT = {"name": "unit-test", "training": {"steps": 4}, "tags": ["a", 1.5]}


@pytest.fixture
def registered():
    """The tiny test net registered as score_net 'tiny-mlp' for this test only."""
    invdiff.plugins.reset_registry()
    invdiff.plugins.get_registry().add_plugin(PLUGIN, name="tests-tiny-net", strict=True)
    yield
    invdiff.plugins.reset_registry()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run with checkpoints: (trainer, checkpoint folder)."""
    folder = tmp_path_factory.mktemp("ckpt")
    train, val = gaussian_datasets(make_problem(n=2, mask_fraction=1.0), 128, 32, seed=2)
    cfg = TrainingConfig(steps=4, batch_size=32, lr=1e-2, ema_decay=0.5, val_every=2,
                         checkpoint_every=2)
    tr = Trainer(TinyScoreNet(**SPEC["params"]), train, SIGMAS, cfg, val=val,
                 checkpoint_dir=folder, net_spec=SPEC, experiment=EXPERIMENT, progress=False)
    tr.fit()
    return tr, folder


def outputs(net, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(5, 1, 2, 2, generator=g), torch.randn(5, 1, 2, 2, generator=g)
    with torch.no_grad():
        return net(x, y, torch.linspace(0.1, 3.0, 5))


def test_load_model_round_trip(registered, trained):
    tr, folder = trained
    model = load_model(folder / "final.pt")
    assert torch.equal(outputs(model), outputs(tr.ema.module))  # EMA weights by default
    raw = load_model(folder / "final.pt", ema=False)
    assert torch.equal(outputs(raw), outputs(tr.net))
    assert not torch.equal(outputs(raw), outputs(model))  # with decay 0.5 they differ
    assert torch.equal(model.sigmas, SIGMAS) and not model.training
    assert model.x_shape == (1, 2, 2) and model.net.mlp[0].out_features == 16
    for k, v in tr.normalization.state_dict().items():
        assert torch.equal(getattr(model.normalization, k), v)
    by_hand = load_model(folder / "final.pt", net=TinyScoreNet(hidden=16, seed=99))
    assert torch.equal(outputs(by_hand), outputs(model))


def test_checkpoint_contents(trained):
    tr, folder = trained
    ckpt = load_checkpoint(folder / "last.pt")
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["step"] == 4
    assert ckpt["experiment"] == json.loads(json.dumps(EXPERIMENT))
    assert ckpt["net_spec"] == SPEC
    assert set(ckpt["optimizer"]) == {"state", "param_groups"}
    assert json.loads(ckpt["training"]["history"]) == tr.history
    assert TrainingConfig.model_validate_json(ckpt["training"]["config"]) == tr.config


def test_load_model_without_registry_entry_or_spec(trained, tmp_path):
    tr, folder = trained
    invdiff.plugins.reset_registry()  # tiny-mlp is not registered now
    with pytest.raises(invdiff.UnknownComponentError, match="tiny-mlp"):
        load_model(folder / "final.pt")
    path = tmp_path / "nospec.pt"
    save_checkpoint(path, model={}, ema={}, optimizer={}, step=0,
                    normalization=tr.normalization, sigmas=SIGMAS)
    with pytest.raises(CheckpointError, match="net=your_net"):
        load_model(path)


def test_mismatched_network(registered, trained):
    _, folder = trained
    with pytest.raises(CheckpointError, match="final.pt.*do not fit.*TinyScoreNet"):
        load_model(folder / "final.pt", net=TinyScoreNet(hidden=8))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(folder / "final.pt", net=TinyScoreNet(x_shape=(1, 3, 3), hidden=16))


def rewrite(src, dst, edit) -> None:
    ckpt = torch.load(src, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)


def test_wrong_version_and_missing_keys(trained, tmp_path):
    _, folder = trained
    rewrite(folder / "final.pt", tmp_path / "v99.pt", lambda c: c.update(format_version=99))
    with pytest.raises(CheckpointError, match="v99.pt.*version 99.*reads version 1"):
        load_checkpoint(tmp_path / "v99.pt")
    rewrite(folder / "final.pt", tmp_path / "noema.pt", lambda c: c.pop("ema"))
    with pytest.raises(CheckpointError, match=r"noema.pt lacks checkpoint fields \['ema'\]"):
        load_checkpoint(tmp_path / "noema.pt")
    torch.save({"weight": torch.ones(2)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="bare state_dict"):
        load_checkpoint(tmp_path / "bare.pt")


def test_missing_corrupt_and_truncated_files(trained, tmp_path):
    _, folder = trained
    with pytest.raises(CheckpointError, match="no checkpoint at .*nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="garbage.pt is not a readable"):
        load_checkpoint(tmp_path / "garbage.pt")
    data = (folder / "final.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="half.pt is not a readable"):
        load_checkpoint(tmp_path / "half.pt")


class Payload:
    """Pickling this runs code on load; weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_weights_only_refuses_arbitrary_objects(tmp_path, capsys):
    torch.save({"format_version": FORMAT_VERSION, "model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt")
    assert "arbitrary code ran" not in capsys.readouterr().out


def test_crash_during_write_keeps_previous_file(trained, tmp_path, monkeypatch):
    tr, _ = trained
    path = tmp_path / "last.pt"
    tr.save(path)
    before = path.read_bytes()

    def dies_halfway(obj, fh):
        fh.write(b"PK\x03\x04 partial zip")  # some bytes reach the disk, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        tr.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == tr.step
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_experiment_must_be_json(trained, tmp_path):
    tr, _ = trained
    with pytest.raises(ConfigError, match="JSON-able"):
        save_checkpoint(tmp_path / "x.pt", model={}, ema={}, optimizer={}, step=0,
                        normalization=tr.normalization, sigmas=SIGMAS,
                        experiment={"bad": object()})
