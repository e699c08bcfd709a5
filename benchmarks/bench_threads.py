"""Thread policy: per-operation time with the default environment, on an idle machine and
beside one busy process, for the two native workloads of invdiff.

* FEM: one elasticity solve (banded Cholesky, LAPACK dpbsv) at N = 64, with the solver's
  default thread limit (``SOLVE_THREADS`` BLAS threads) and without it (the BLAS library's
  default: one thread per core).
* Training: one U-Net training step (the demo's net, batch 64, 16 x 16, Adam) with 1 and 2
  torch threads.

Each case runs in a fresh process whose environment has no ``*_NUM_THREADS`` variables (what a
user gets), timed as the median of a few repetitions; "loaded" starts one busy process (a
pure-Python loop on one core) for the duration. Prints a Markdown table::

    nice .venv/bin/python benchmarks/bench_threads.py [--solves 12] [--steps 4]

The machine this ran on is shared: "idle" means no busy process of ours, not an empty machine;
compare the columns of one row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CASE = r"""
import json, statistics, sys, time
import torch
kind, arg, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
if kind == "fem":
    import numpy as np
    from invdiff_elasticity import ElasticityFEM, LognormalFieldPrior
    from invdiff_elasticity import fem as fem_module, solvers
    fem = ElasticityFEM(grid=64, compression=0.01)
    mus = LognormalFieldPrior(n=64, dtype="float64").sample(
        reps + 2, generator=torch.Generator().manual_seed(0))[:, 0].numpy()
    solve = {"limited": solvers.solve_scipy, "unlimited": solvers._solve_scipy}[arg]
    fem_module.solve_scipy = solve  # the solver the FEM calls
    fem.displacement(mus[0])
    for m in mus[1:]:
        t0 = time.perf_counter(); fem.displacement(m); times.append(time.perf_counter() - t0)
else:
    import invdiff
    torch.set_num_threads(int(arg))
    net = invdiff.create("score_net", "unet", x_shape=(1, 16, 16), y_shape=(1, 16, 16),
                         base_width=16, channel_mult=[1, 2, 2], num_res_blocks=1)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 16, 16, generator=g), torch.randn(64, 1, 16, 16, generator=g)
    sigma = torch.rand(64, generator=g) + 0.1
    for i in range(reps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = ((sigma[:, None, None, None] * net(x + sigma[:, None, None, None] * y, y, sigma)
                 + y) ** 2).mean()
        loss.backward(); opt.step()
        if i:
            times.append(time.perf_counter() - t0)
print(json.dumps(statistics.median(times)))
"""

CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.endswith("_NUM_THREADS") and k != "OMP_THREAD_LIMIT"}


def case(kind: str, arg: str, reps: int, loaded: bool) -> float:
    busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None)
    try:
        time.sleep(0.2 if loaded else 0)
        out = subprocess.run([sys.executable, "-c", CASE, kind, arg, str(reps)], env=CLEAN_ENV,
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solves", type=int, default=12)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)
    print(f"cores: {os.cpu_count()}\n")
    print("| workload | setting | idle (s) | beside a busy process (s) | loaded / idle |")
    print("|---|---|---|---|---|")
    rows = [("FEM solve, N = 64", "fem", "limited", "1 BLAS thread (default)", args.solves),
            ("FEM solve, N = 64", "fem", "unlimited", "BLAS default threads", args.solves),
            ("U-Net step, batch 64", "train", "1", "1 torch thread", args.steps),
            ("U-Net step, batch 64", "train", "2", "2 torch threads", args.steps)]
    for label, kind, arg, setting, reps in rows:
        idle, loaded = case(kind, arg, reps, False), case(kind, arg, reps, True)
        print(f"| {label} | {setting} | {idle:.4f} | {loaded:.4f} | {loaded / idle:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
