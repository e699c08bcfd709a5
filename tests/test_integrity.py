"""Checksums: damaged checkpoints, datasets and simulation chunks are refused (or redone), never
used; files without a checksum (older invdiff) still load."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

from invdiff.data import Dataset, Normalization, load_dataset
from invdiff.errors import CheckpointError, DataError
from invdiff.integrity import content_digest
from invdiff.training.checkpoint import CHECKSUM_KEY, load_checkpoint, load_model
from tests.test_checkpoint import outputs, registered, trained  # noqa: F401 - fixtures


def overwrite_member(path, member_filter, n_bytes: int = 32, value: bytes = b"\x7f") -> str:
    """Overwrite ``n_bytes`` in the middle of the largest zip member whose name passes
    ``member_filter`` (stored uncompressed, as torch.save and np.savez write), in place."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if member_filter(i.filename)),
                   key=lambda i: i.file_size)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
        start = info.header_offset + 30 + int(name_len) + int(extra_len)
        fh.seek(start + info.file_size // 2 - n_bytes // 2)
        fh.write(value * n_bytes)
    return info.filename


def tensors(obj) -> list[torch.Tensor]:
    """Every tensor of a nested checkpoint dict, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=repr) for t in tensors(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors(v)]
    return []


def test_digest_sees_every_tensor_byte_and_ignores_device_and_layout():
    a = {"w": torch.arange(12.0).reshape(3, 4), "meta": ["x", 1, 2.5, None], "k": {3: True}}
    strided = torch.arange(12.0).reshape(3, 4).T.contiguous().T  # same values, other layout
    b = {"k": {3: True}, "meta": ["x", 1, 2.5, None], "w": strided}
    assert content_digest(a) == content_digest(b)
    c = {**a, "w": a["w"].clone()}
    c["w"][1, 2] = torch.nextafter(c["w"][1, 2], torch.tensor(99.0))  # one ulp
    assert content_digest(c) != content_digest(a)
    assert content_digest({"w": a["w"].double()}) != content_digest({"w": a["w"]})


def test_damaged_checkpoint_weights_are_refused(registered, trained, tmp_path):  # noqa: F811
    _, folder = trained
    path = tmp_path / "final.pt"
    path.write_bytes((folder / "final.pt").read_bytes())
    member = overwrite_member(path, lambda name: "/data/" in name)
    # the damage is real: torch itself loads the file and the values changed
    raw = torch.load(path, weights_only=True)
    ok = torch.load(folder / "final.pt", weights_only=True)
    pairs = zip(tensors(raw), tensors(ok), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs), member
    for load in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError, match="damaged.*sha256.*another checkpoint"):
            load(path)


def test_checkpoint_without_checksum_loads_with_a_warning(registered, trained, tmp_path):  # noqa: F811
    tr, folder = trained
    ckpt = torch.load(folder / "final.pt", weights_only=True)
    del ckpt[CHECKSUM_KEY]
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="no checksum"):
        model = load_model(tmp_path / "old.pt")
    assert torch.equal(outputs(model), outputs(tr.ema.module))


@pytest.mark.parametrize("content", [os.urandom(4096), b"\x80\x02}q\x00."])
def test_random_bytes_never_suggest_turning_safe_loading_off(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "retrain" in msg and "\n" not in msg
    assert "weights_only" not in msg and "False" not in msg and "arbitrary code" not in msg


def test_objects_refused_by_safe_loading_are_named_without_torch_advice(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"f": Normalization}, path)  # a class: safe loading refuses it
    with pytest.raises(CheckpointError, match="safe loading refuses.*Normalization") as err:
        load_checkpoint(path)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


def _dataset() -> Dataset:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 4, 4, generator=g), torch.randn(64, 1, 4, 4, generator=g)
    return Dataset(x, y, Normalization.fit(x, y), {"n": 64})


def test_damaged_dataset_is_refused_naming_the_fix(tmp_path):
    path = _dataset().save(tmp_path / "train.npz")
    assert torch.equal(load_dataset(path).x, _dataset().x)  # intact: loads
    overwrite_member(path, lambda name: name == "x.npy")
    with pytest.raises(DataError, match=r"train.npz .*simulate again"):
        load_dataset(path)


def test_dataset_checksum_catches_an_edit_that_keeps_the_zip_valid(tmp_path):
    ds = _dataset()
    path = ds.save(tmp_path / "train.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["x"][3, 0, 1, 1] += 1.0  # rewritten as a valid npz, old checksum kept
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="do not match the sha256"):
        load_dataset(path)
    del arrays["sha256"]
    np.savez(path, **arrays)  # no checksum: loads as it is, with a warning naming the file
    with pytest.warns(UserWarning, match=r"train.npz carries no checksum"):
        assert float(load_dataset(path).x[3, 0, 1, 1]) == float(ds.x[3, 0, 1, 1]) + 1.0


@pytest.mark.parametrize("damage", ["garbage", "edit"])
def test_damaged_simulation_chunk_is_simulated_again(tmp_path, damage):
    import invdiff
    from invdiff.reference import make_problem
    from tests.test_simulation import CrashAfter

    prob = make_problem(n=6, mask_fraction=0.8)
    path = tmp_path / "data.npz"
    full = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, n=40,
                            chunk_size=8, seed=1, progress=False, spec="same")
    with pytest.raises(KeyboardInterrupt):
        invdiff.simulate(prob.prior, CrashAfter(prob.forward_model, 4), prob.noise_model, n=40,
                         chunk_size=8, seed=1, path=path, progress=False, spec="same")
    chunk = tmp_path / "data.npz.parts" / "chunk_000001.npz"
    if damage == "garbage":
        chunk.write_bytes(os.urandom(300))
    else:
        overwrite_member(chunk, lambda name: name == "x.npy", n_bytes=8)
    counting = CrashAfter(prob.forward_model, 10**9)
    with pytest.warns(UserWarning, match="chunk_000001.npz .*simulated again"):
        resumed = invdiff.simulate(prob.prior, counting, prob.noise_model, n=40, chunk_size=8,
                                   seed=1, path=path, progress=False, spec="same")
    assert counting.calls == 3  # the 2 missing chunks and the damaged one
    assert torch.equal(resumed.x, full.x) and torch.equal(resumed.y, full.y)
