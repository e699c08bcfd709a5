"""Data: simulated pairs and where they come from.

* ``dataset``: :class:`Dataset` (pairs ``x (N, C, H, W)``, ``y``, ``y_clean`` in physical
  units), :class:`Normalization`, checksummed ``.npz`` files;
* ``simulation``: :func:`simulate`, chunked, seeded per chunk, resumable;
* ``chunks``: one chunk, the unit of work of every executor;
* ``dask_executor``: the chunks on a Dask cluster (``data.executor = "dask"``).

Names load lazily: importing the package does not import torch.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "Dataset": "invdiff.data.dataset",
    "Normalization": "invdiff.data.dataset",
    "load_dataset": "invdiff.data.dataset",
    "save_arrays": "invdiff.data.dataset",
    "load_arrays": "invdiff.data.dataset",
    "CHECKSUM": "invdiff.data.dataset",
    "simulate": "invdiff.data.simulation",
    "chunk_seed": "invdiff.data.chunks",
    "simulate_chunk": "invdiff.data.chunks",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
