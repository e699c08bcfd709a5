"""Throughput of the score networks: training steps and score evaluations per second.

For each net (refinenet, unet) and grid (32 x 32, 64 x 64), four variants are timed side by
side: float32 or bf16 autocast, contiguous or channels_last. The variants are measured in
interleaved rounds (round r times every variant once) and the median over rounds is kept, so
a change of load on a shared machine hits all variants alike; compare the ratios.

* train: examples/s of one step ``forward + backward + Adam`` on a DSM loss (``--train-batch``);
* sample: score evaluations/s at batch ``--sample-batch`` (100) under ``torch.no_grad``.

Usage (prints a Markdown table; ``--out`` also writes it with the command)::

    .venv/bin/python benchmarks/bench_nets.py --out docs/results/nets-throughput.md
    .venv/bin/python benchmarks/bench_nets.py --device cuda --grids 64 128 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import torch
from invdiff_refinenet.net import ConditionalRefineNet
from invdiff_unet.net import ConditionalUNet

#: Widths per scale. "cpu": similar parameter counts (about 0.12 M each); "paper": the nets of
#: the study's GPU preset, read from invdiff/presets/gpu.toml (RefineNet ngf = 64 as in the
#: paper, a U-Net of base width 64).
GPU_PRESET = Path(__file__).resolve().parents[1] / "invdiff" / "presets" / "gpu.toml"
WIDTH_KW: dict[str, dict[str, dict]] = {
    "cpu": {"refinenet": {"ngf": 8}, "unet": {"base_width": 8}},
    "paper": {net: spec["params"]
              for net, spec in tomllib.loads(GPU_PRESET.read_text())["nets"].items()},
}
NETS: dict[str, Callable[..., torch.nn.Module]] = {
    "refinenet": lambda shape, **kw: ConditionalRefineNet(shape, shape, **kw),
    "unet": lambda shape, **kw: ConditionalUNet(shape, shape, **kw),
}
VARIANTS = [(False, False), (True, False), (False, True), (True, True)]  # (bf16, channels_last)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (device work included)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def make_steps(
    net: torch.nn.Module, grid: int, train_batch: int, sample_batch: int, device: torch.device
) -> tuple[Callable[[], None], Callable[[], None]]:
    """A training step (DSM loss, backward, Adam) and a batched no-grad score evaluation."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def draw(b: int) -> tuple[torch.Tensor, ...]:
        x = torch.randn(b, 1, grid, grid, generator=g).to(device)
        y = torch.randn(b, 1, grid, grid, generator=g).to(device)
        sigma = torch.rand(b, generator=g).add(0.05).to(device)
        return x, y, sigma

    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    xt, yt, st = draw(train_batch)
    zt = torch.randn_like(xt)
    xs, ys, ss = draw(sample_batch)

    def train() -> None:
        s4 = st.view(-1, 1, 1, 1)
        loss = (s4 * net(xt + s4 * zt, yt, st) + zt).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sample() -> None:
        with torch.no_grad():
            net(xs, ys, ss)

    return train, sample


def bench(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    for name in args.nets:
        for grid in args.grids:
            steps = {}
            for bf16, cl in VARIANTS:
                torch.manual_seed(0)
                net = NETS[name]((1, grid, grid), bf16=bf16, channels_last=cl,
                                 **WIDTH_KW[args.scale][name]).to(device)
                steps[(bf16, cl)] = make_steps(net, grid, args.train_batch, args.sample_batch,
                                               device)
                n_params = sum(p.numel() for p in net.parameters())
            times: dict[tuple, dict[str, list[float]]] = {
                k: {"train": [], "sample": []} for k in steps
            }
            for r in range(args.rounds + 1):  # round 0 warms up (allocator, oneDNN kernels)
                for key, (train, sample) in steps.items():
                    tt, ts = timed(train, device), timed(sample, device)
                    if r > 0:
                        times[key]["train"].append(tt)
                        times[key]["sample"].append(ts)
            for (bf16, cl), t in times.items():
                rows.append({
                    "net": name, "grid": grid, "params": n_params,
                    "dtype": "bf16" if bf16 else "fp32", "channels_last": cl,
                    "train": args.train_batch / statistics.median(t["train"]),
                    "sample": args.sample_batch / statistics.median(t["sample"]),
                })
            print(f"done {name} {grid}x{grid}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table; ratios are against fp32 contiguous of the same net and grid."""
    lines = ["| net | grid | params | dtype | channels_last | train ex/s | x fp32 | "
             "sample evals/s | x fp32 |", "|" + " --- |" * 9]
    base = {(r["net"], r["grid"]): r for r in rows if r["dtype"] == "fp32"
            and not r["channels_last"]}
    for r in rows:
        b = base[(r["net"], r["grid"])]
        lines.append(
            f"| {r['net']} | {r['grid']}x{r['grid']} | {r['params']:,} | {r['dtype']} | "
            f"{'on' if r['channels_last'] else 'off'} | {r['train']:.1f} | "
            f"{r['train'] / b['train']:.2f} | {r['sample']:.1f} | {r['sample'] / b['sample']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--grids", nargs="+", type=int, default=[32, 64])
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--sample-batch", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--scale", choices=list(WIDTH_KW), default="cpu",
                   help="net widths: cpu (about 0.12 M parameters) or paper (the GPU preset's)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    text = table(bench(args))
    print(text)
    if args.out is not None:
        command = " ".join([".venv/bin/python", "benchmarks/bench_nets.py", *sys.argv[1:]])
        cpu = (torch.backends.cpu.get_cpu_capability() if args.device == "cpu"
               else torch.cuda.get_device_name(torch.device(args.device)))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            f"# Score-net throughput\n\nCommand: `{command}`\n\n"
            f"torch {torch.__version__}, device {args.device} ({cpu}), "
            f"{torch.get_num_threads()} threads, widths: "
            + "; ".join(f"{k} {WIDTH_KW[args.scale][k]}" for k in args.nets)
            + f"; train batch {args.train_batch}, sample batch {args.sample_batch}, "
            f"median of {args.rounds} interleaved rounds; {time.perf_counter() - t0:.0f} s.\n\n"
            + text + "\n"
        )


if __name__ == "__main__":
    main()
