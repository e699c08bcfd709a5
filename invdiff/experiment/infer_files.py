"""``invdiff infer`` on files: measurements read from ``.npy`` / ``.npz``, results written.

Inputs: each ``MEASUREMENT`` is a ``.npy`` array ``(C, H, W)`` or ``(B, C, H, W)``, or an
``.npz`` with such an array ``y``; all are checked (readable, real, finite, the model's shape)
before any work, and concatenated in the order given. For a model trained with
``training.masking``, NaN entries mark what was not measured.

Outputs in ``--out`` (each written atomically, only after everything succeeded):

```
posterior.npz      mean, std, q05, q50, q95 (M, *x_shape), samples (M, n, *x_shape) unless
                   --no-samples, y (M, *y_shape), residual (the posterior predictive residual
                   map), source (the input file of each measurement); checksummed
report.json        the model's identity, the sampler and its cost, and per measurement the
                   out-of-distribution verdict and the posterior predictive check
figures/measurement_<m>.png   measurement, posterior mean, std, samples, residual map
```
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invdiff.errors import DataError
from invdiff.experiment.inference import check_measurements

__all__ = ["read_measurements", "write_results"]


def read_measurements(paths: list[str | Path], y_shape: tuple[int, ...],
                      masking: bool = False) -> tuple[torch.Tensor, list[str]]:
    """The measurements of ``paths`` as one batch ``(M, *y_shape)`` and the file of each;
    ``masking``: NaN entries (not measured) are welcome (a model trained with
    ``training.masking``)."""
    batches, sources = [], []
    for path in map(Path, paths):
        arr = _load(path)
        y = check_measurements(arr, y_shape, str(path), masking)
        batches.append(y)
        sources += [str(path)] * len(y)
    return torch.cat(batches), sources


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: no such file; give .npy or .npz measurement files")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if "y" not in f.files:
                    has = ", ".join(f.files) or "no arrays"
                    raise DataError(f"{path} has no array 'y' (it has {has}); save the "
                                    f"measurements as numpy.savez(path, y=...)")
                return f["y"]
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable NumPy file ({exc}); write it with "
                        f"numpy.save or numpy.savez") from None
    raise DataError(f"{path}: measurements are read from .npy or .npz files, not "
                    f"{path.suffix or 'a file without an extension'}")


def write_results(out: str | Path, result: Any, y: torch.Tensor, sources: list[str],
                  samples: bool = True, figures: bool = True, labels: Any = None
                  ) -> list[Path]:
    """Write ``posterior.npz``, ``report.json`` and the figures of an
    :class:`~invdiff.experiment.inference.Inference` to ``out``; returns the files."""
    from invdiff.data.dataset import save_arrays
    from invdiff.io import atomic_write_text
    from invdiff.sampling.posterior import quantile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    post = result.posterior
    lo, mid, hi = quantile(post.samples, (0.05, 0.5, 0.95))
    arrays = {"mean": post.mean, "std": post.std, "q05": lo, "q50": mid, "q95": hi, "y": y,
              "source": np.asarray(sources)}
    if samples:
        arrays["samples"] = post.samples
    if result.residual is not None:
        arrays["residual"] = result.residual
    arrays = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
              for k, v in arrays.items()}
    files = [save_arrays(out / "posterior.npz", arrays)]
    report = {**result.report, "files": {"posterior": "posterior.npz"}}
    for m, row in enumerate(report["measurements"]):
        row["source"] = sources[m]
    files.append(atomic_write_text(out / "report.json", json.dumps(report, indent=2)))
    if figures:
        from invdiff.evaluation.figures import posterior_figure

        for m in range(len(y)):
            row = report["measurements"][m]
            title = (f"measurement {m} ({Path(sources[m]).name}): "
                     + row.get("verdict", "unchecked").split(":")[0])
            files.append(posterior_figure(
                out / "figures" / f"measurement_{m}.png", None, y[m], post.samples[m],
                title=title, labels=labels,
                residual=None if result.residual is None else result.residual[m]))
    return files
