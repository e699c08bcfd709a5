"""A trained run folder's training pairs and model, for the diagnostics that read one
(``y_sensitivity.py``, ``memorisation.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from invdiff.training.checkpoint import load_model


def load_trained_run(run: Path, net: str | None = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``x, y`` of ``RUN/data/train.npz`` (float32, physical units) and the EMA model of
    ``RUN[/NET]/checkpoints/final.pt``; exits with a message naming the missing file."""
    ckpt = (run / net if net else run) / "checkpoints" / "final.pt"
    for path in (run / "data" / "train.npz", ckpt):
        if not path.exists():
            raise SystemExit(f"{path} does not exist: RUN must be a run folder with data/ and "
                             f"a trained {ckpt.relative_to(run)} (train it first)")
    data = np.load(run / "data" / "train.npz")
    x, y = (torch.from_numpy(data[k]).float() for k in ("x", "y"))
    return x, y, load_model(ckpt)
