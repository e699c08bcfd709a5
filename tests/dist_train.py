"""A training script for the multi-process tests, run by ``torch.distributed.run`` (or directly
as one process): ``python tests/dist_train.py MODE OUT``.

Modes:
    train    12 steps uninterrupted into OUT/full; a run in OUT/part that every rank aborts
             at step 8 (its last.pt is of step 5; a copy goes to OUT/part5), then a new
             trainer that resumes OUT/part up to 12 steps.
    mismatch rank 1 uses another seed: the ranks must refuse to start.
    crash    rank 1 raises at step 2: the others must stop instead of waiting.
    hang     rank 1 stops answering at step 2: the others must fail after the timeout.

Each rank saves OUT/rank{R}_{name}.pt: the weights, the EMA, the history and the y rows its
network was given during training (one tensor per step), which shows what it computed.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invdiff.reference import make_problem  # noqa: E402
from invdiff.sampling.sigmas import geometric  # noqa: E402
from invdiff.training import (  # noqa: E402
    Trainer,
    TrainingConfig,
    distributed,  # noqa: E402
)
from tests.nets import TinyScoreNet, gaussian_datasets  # noqa: E402

SIGMAS = geometric(5.0, 0.05, 10)
STEPS, PART = 12, 5


class RecordingNet(TinyScoreNet):
    """TinyScoreNet that keeps the y rows it is given while training (not in validation)."""

    def __init__(self, *args, crash_at: int | None = None, hang_at: int | None = None,
                 **kw) -> None:
        super().__init__(*args, **kw)
        self.seen: list[torch.Tensor] = []
        self.crash_at, self.hang_at = crash_at, hang_at

    def forward(self, x, y, sigma):
        if self.training:
            if self.crash_at is not None and len(self.seen) == self.crash_at:
                raise RuntimeError("simulated crash of this rank")
            if self.hang_at is not None and len(self.seen) == self.hang_at:
                time.sleep(600)  # alive but silent: only the process-group timeout helps
            self.seen.append(y.detach().clone())
        return super().forward(x, y, sigma)


def data():
    problem = make_problem(n=2, blur=0.5, mask_fraction=1.0, noise_level=0.3)
    return problem, *gaussian_datasets(problem, n_train=96, n_val=40, seed=1)


def config(steps: int = STEPS, **kw) -> TrainingConfig:
    base = dict(steps=steps, batch_size=16, lr=2e-3, warmup_steps=2, val_every=4,
                checkpoint_every=PART, seed=3, ema_decay=0.9, redraw_noise=True)
    return TrainingConfig(**(base | kw))


def make(folder: Path | None, steps: int = STEPS, crash_at: int | None = None,
         hang_at: int | None = None, **kw) -> Trainer:
    problem, train, val = data()
    net = RecordingNet(crash_at=crash_at, hang_at=hang_at)
    return Trainer(net, train, SIGMAS, config(steps, **kw), val=val,
                   noise_model=problem.noise_model, checkpoint_dir=folder, progress=False)


def dump(trainer: Trainer, path: Path) -> None:
    torch.save({"model": trainer.net.state_dict(), "ema": trainer.ema.state_dict(),
                "history": trainer.history, "seen": trainer.net.seen,
                "world_size": trainer.dist.world_size}, path)


def main(mode: str, out: Path) -> None:
    rank = distributed.context().rank
    out.mkdir(parents=True, exist_ok=True)
    if mode == "train":
        full = make(out / "full")
        full.fit()
        dump(full, out / f"rank{rank}_full.pt")
        part = make(out / "part", crash_at=PART + 3)  # killed at step 8, last.pt of step 5
        try:
            part.fit()
        except RuntimeError:
            pass
        if rank == 0:
            shutil.copytree(out / "part", out / "part5")
        distributed.barrier()
        resumed = make(out / "part")
        resumed.fit(resume=True)
        dump(resumed, out / f"rank{rank}_resumed.pt")
    elif mode == "mismatch":
        make(None, seed=3 + rank)
    elif mode == "crash":
        make(None, crash_at=2 if rank == 1 else None).fit()
    elif mode == "hang":
        make(None, hang_at=2 if rank == 1 else None).fit()
    else:
        raise SystemExit(f"unknown mode {mode}")
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
