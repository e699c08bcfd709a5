"""Has a trained score net memorised its training fields? DSM loss on seen vs unseen pairs.

For ``k`` disjoint sets of ``n`` pairs from the start of the run's ``data/train.npz`` (fields
the net trained on) and the last ``n`` pairs (the validation split, never trained on), in the
net's normalised units and with the same noise z and the same levels for every set, the mean
DSM loss

    l(sigma) = 1/2 || sigma s(x + sigma z, y, sigma) + z ||^2

at 8 levels spread over the ladder. Sets of a few hundred fields differ by several per cent
just by which fields they hold; the ``k`` seen sets show that spread. A net that has memorised
its fields scores the unseen set clearly above the seen sets' range (mostly at small sigma,
where the score pins down x); an unseen loss inside the range means more distinct training
fields would not help it. The stored y of a seen pair is one noise draw among those the net
trained on (``redraw_noise``), so the test is of the fields.

    .venv/bin/python benchmarks/memorisation.py runs/oce-spheroid-iid-ladder-12k

RUN is a run folder holding ``data/train.npz`` and ``checkpoints/final.pt`` (``--net NAME``
for the study's layout ``RUN/NAME/checkpoints/final.pt``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from trained_run import load_trained_run  # the sibling module (benchmarks/ is on sys.path)

from invdiff.training import dsm_terms


def losses(run: Path, net: str | None = None, n: int = 256, k: int = 4, levels: int = 8,
           seed: int = 0) -> dict[str, list[float]]:
    """``{"sigma": [...], "seen 1": [...], ..., "seen k": [...], "unseen": [...]}``: mean DSM
    loss per level."""
    x, y, model = load_trained_run(run, net)
    if len(x) < (k + 1) * n:
        raise SystemExit(f"{len(x)} pairs: fewer than (k + 1) n = {(k + 1) * n}; pass a "
                         f"smaller --n or --k")
    norm = model.normalization
    idx = torch.linspace(0, len(model.sigmas) - 1, levels).round().long()
    sigmas = model.sigmas[idx].tolist()
    z = torch.randn((levels, n, *x.shape[1:]), generator=torch.Generator().manual_seed(seed))
    out: dict[str, list[float]] = {"sigma": sigmas}
    parts = [(f"seen {i + 1}", slice(i * n, (i + 1) * n)) for i in range(k)]
    for name, part in (*parts, ("unseen", slice(len(x) - n, None))):
        xn, yn = norm.normalize_x(x[part]), norm.normalize_y(y[part])
        with torch.no_grad():
            out[name] = [float(dsm_terms(model.net, xn, yn, torch.full((n,), s), z[i]).mean())
                         for i, s in enumerate(sigmas)]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--net", default=None, help="net folder inside RUN (study layout)")
    ap.add_argument("--n", type=int, default=256, help="pairs per set (the validation split's "
                                                      "size at most)")
    ap.add_argument("--k", type=int, default=4, help="seen sets")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = losses(args.run, args.net, args.n, args.k)
    sigmas = res.pop("sigma")
    print("| set | " + " | ".join(f"sigma = {s:.3g}" for s in sigmas) + " |")
    print("|---|" + "---|" * len(sigmas))
    for name, row in res.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    seen = np.array([row for name, row in res.items() if name.startswith("seen")])
    pos = (np.array(res["unseen"]) - seen.min(0)) / np.maximum(np.ptp(seen, 0), 1e-12)
    print("| unseen in the seen range (0 = min, 1 = max) | "
          + " | ".join(f"{p:.2f}" for p in pos) + " |")


if __name__ == "__main__":
    main()
