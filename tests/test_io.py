"""Atomic writes and the npz cache of expensive arrays."""

from __future__ import annotations

import os

import numpy as np
import pytest

from invdiff.io import atomic_write, cached_arrays


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write(path, lambda fh: fh.write(b"old"))

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.txt"]  # no temporary file left behind


def test_cached_arrays_computes_once_and_reads_back(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"mean": np.arange(6.0).reshape(2, 3), "ess": 412.5}

    path = tmp_path / "refs" / "mcmc-0.npz"
    first = cached_arrays(path, compute)
    again = cached_arrays(path, compute)
    assert len(calls) == 1 and path.exists()
    np.testing.assert_array_equal(again["mean"], first["mean"])
    assert float(again["ess"]) == 412.5 and again["mean"].shape == (2, 3)


def test_cached_arrays_recomputes_an_unreadable_cache(tmp_path):
    path = tmp_path / "ref.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.warns(UserWarning, match="unreadable.*computing them again"):
        out = cached_arrays(path, lambda: {"a": np.ones(3)})
    np.testing.assert_array_equal(out["a"], np.ones(3))
    np.testing.assert_array_equal(cached_arrays(path, lambda: {})["a"], np.ones(3))  # rewritten


def test_content_key_tracks_values_dtype_shape_and_configs():
    import torch

    from invdiff.io import content_key

    a = np.arange(6.0)
    assert content_key(a, {"n": 1}) == content_key(a.copy(), {"n": 1})
    assert content_key(a) == content_key(torch.arange(6.0, dtype=torch.float64))
    keys = {content_key(a), content_key(a.reshape(2, 3)), content_key(a.astype(np.float32)),
            content_key(a + 1e-9), content_key(a, {"n": 1}), content_key(a, {"n": 2})}
    assert len(keys) == 6 and all(len(k) == 12 for k in keys)
