"""Content checksums: a file's data is verified on load against the sha256 written with it.

A checkpoint or dataset whose bytes change after writing (a bad disk, an interrupted copy, an
edit) may still load: overwriting 32 bytes inside a ``.pt`` file's tensor data leaves a valid
zip, and the damaged weight silently poisons every sample. So each file carries the sha256 of
its content, computed when it is written and checked when it is read.

Fingerprints (:func:`fingerprint`) are the one rule by which invdiff decides whether a thing
it made before can be reused: simulated data, a trained model, posterior samples, a study
cell, an MCMC chain. Each is keyed by the fingerprint of everything that determines it.

The digest is over the *content*, not the file's bytes, so it can live inside the file it
guards (no sidecar that a copy could leave behind): :func:`content_digest` walks a nested
structure of dicts, lists, tensors, arrays and plain values in a fixed order and hashes each
tensor's dtype, shape and raw bytes (on CPU, contiguous). Equal content gives an equal digest
whatever the device it was saved from or loaded onto.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["content_digest", "fingerprint", "file_sha256", "PREFIX"]

PREFIX = "sha256:"


def content_digest(obj: Any) -> str:
    """``"sha256:<hex>"`` of a nested structure of dicts (keys in sorted order), lists and
    tuples, torch tensors, NumPy arrays and plain values (str, int, float, bool, None)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return PREFIX + h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if hasattr(obj, "detach"):  # a torch tensor: torch is loaded already
        import torch

        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"A{a.dtype.str}{a.shape}|".encode())
        h.update(a.tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}|".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"{type(obj).__name__}:{obj!r}|".encode())


def fingerprint(*parts: Any, length: int = 16) -> str:
    """A short hex key of ``parts`` for reuse decisions and cache names: equal inputs give
    equal keys across runs and machines.

    A part that is JSON (dicts, lists, numbers, strings; a config's ``model_dump(mode="json")``)
    enters as its sorted JSON, anything else (tensors, arrays) through :func:`content_digest`.
    One JSON part alone hashes exactly as ``sha256(json.dumps(part, sort_keys=True,
    default=str))``, the rule simulated datasets have always been signed with, so data
    written by earlier releases keep their keys.
    """
    h = hashlib.sha256()
    for i, p in enumerate(parts):
        if i:
            h.update(b"|")
        if _is_json(p):
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        else:
            h.update(content_digest(p).encode())
    return h.hexdigest()[:length]


def _is_json(obj: Any) -> bool:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return True
    if isinstance(obj, dict):
        return all(_is_json(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_is_json(v) for v in obj)
    return False


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (what ties a result to the checkpoint file
    it came from)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
