"""Peak memory of sampling with and without score calls in chunks (``chunk_size``).

Samples M measurements x n chains with the demo's U-Net (untrained: memory does not depend on
the weights) at 16 x 16 in a fresh process per setting, and reports the process's peak
resident memory, the wall time and whether the samples are identical::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/sampling_memory.py [--m 16] [--n 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE = r"""
import hashlib, json, resource, sys, time
import torch
import invdiff
from invdiff.data import Normalization
from invdiff.training.model import ScoreModel
from invdiff.sampling.posterior import sample_posterior
from invdiff.sampling.sigmas import geometric
m, n, chunk = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
net = invdiff.create("score_net", "unet", x_shape=(1, 16, 16), y_shape=(1, 16, 16),
                     base_width=16, channel_mult=[1, 2, 2], num_res_blocks=1)
model = ScoreModel(net, Normalization.identity(1, 1), geometric(10.0, 0.01, 2)).eval()
y = torch.randn(m, 1, 16, 16, generator=torch.Generator().manual_seed(0))
t0 = time.perf_counter()
post = sample_posterior(model, y, "annealed-langevin", n=n, steps_per_level=1, progress=False,
                        chunk_size=None if chunk == "none" else int(chunk),
                        generator=torch.Generator().manual_seed(1))
print(json.dumps({"seconds": time.perf_counter() - t0, "nfe": post.nfe,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "digest": hashlib.sha256(post.samples.numpy().tobytes()).hexdigest()[:16]}))
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=16, help="measurements")
    ap.add_argument("--n", type=int, default=256, help="samples per measurement")
    args = ap.parse_args(argv)
    print(f"{args.m} measurements x {args.n} samples = {args.m * args.n} chains, 16 x 16\n")
    print("| chunk_size | peak RSS (MB) | seconds | nfe | samples (sha256) |")
    print("|---|---|---|---|---|")
    for chunk in ("none", "256"):
        out = subprocess.run([sys.executable, "-c", CASE, str(args.m), str(args.n), chunk],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {chunk} | {r['peak_mb']:.0f} | {r['seconds']:.1f} | {r['nfe']} | "
              f"{r['digest']} |", flush=True)


if __name__ == "__main__":
    main()
