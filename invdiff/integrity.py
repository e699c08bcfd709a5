"""Content checksums: a file's data is verified on load against the sha256 written with it.

A checkpoint or dataset whose bytes change after writing (a bad disk, an interrupted copy, an
edit) may still load: overwriting 32 bytes inside a ``.pt`` file's tensor data leaves a valid
zip, and the damaged weight silently poisons every sample. So each file carries the sha256 of
its content, computed when it is written and checked when it is read.

The digest is over the *content*, not the file's bytes, so it can live inside the file it
guards (no sidecar that a copy could leave behind): :func:`content_digest` walks a nested
structure of dicts, lists, tensors, arrays and plain values in a fixed order and hashes each
tensor's dtype, shape and raw bytes (on CPU, contiguous). Equal content gives an equal digest
whatever the device it was saved from or loaded onto.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["content_digest", "PREFIX"]

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
