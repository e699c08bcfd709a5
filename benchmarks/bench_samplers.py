"""Accuracy vs cost of the ladder samplers on the exact-score reference problem.

Problem: ``invdiff.reference.make_problem(n=8, mask_fraction=0.5)`` (8x8 Gaussian field, blur,
half the pixels masked, 5% noise), two measurements, the exact noised score. Every sampler is
compared with the exact posterior N(m, S) itself (not with the law it can reach at best), by

* mean error: RMS over pixels of (sample mean - m) / exact std;
* std ratio: per-pixel sample std / exact std (mean over pixels, and max |ratio - 1|);
* W2: Gaussian 2-Wasserstein distance between N(sample mean, sample cov) and N(m, S). Its
  Monte Carlo floor (exact posterior samples, same n) is printed as the row ``exact``.

Next to the sampled numbers, ``std (recursion)`` gives the noise-free expected std ratio for
samplers with fixed step sizes: the score is linear, so in S's eigenbasis every direction is a
1-D Gaussian whose variance follows V' = c^2 V + noise^2 exactly (annealed Langevin:
c = 1 - a/(lambda + sigma^2), noise^2 = 2a; predictor: c = 1 - d/(lambda + sigma^2),
noise^2 = d; Tweedie: c = lambda/(lambda + sigma^2), no noise). It is undefined for the
snr-rule corrector (random per-chain steps) and for Heun with churn. The deterministic ODE
samplers (heun, dpm-2m) are linear maps x_start -> G x_start in every direction, so their
recursion is read off the sampler itself, run once on the diagonalised problem.

The same noise-free recursion is also given on the 16x16 problem (``make_problem(n=16,
mask_fraction=0.5)``, half its posterior eigenvalues ~ 1e-4), where no sampling is needed.

Last, the ODE samplers with a score that knows only the levels of a ladder (the exact score at
the nearest level, in log sigma, to the sigma asked for: the worst case of a net trained at its
ladder's levels only), off and on the ladder (``on_ladder``).

    nice .venv/bin/python benchmarks/bench_samplers.py --samples 1000  # result file + page
    nice .venv/bin/python benchmarks/bench_samplers.py --quick    # fewer chains, no files
    nice .venv/bin/python benchmarks/bench_samplers.py --redraw   # the figure, from the file

The numbers go to docs/results/data/samplers.json (with the command, threads and machine),
the figure to docs/results/samplers_accuracy.png; ``benchmarks/results_pages.py`` writes
docs/results/samplers.md from the file (called here after the run). Timings share a machine
with other jobs: compare them only within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import invdiff
from invdiff.reference.diagnostics import gaussian_accuracy, reference_case
from invdiff.runtime import torch_threads
from invdiff.sampling.sigmas import geometric, langevin_step_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_pages  # noqa: E402  (benchmarks/results_pages.py: the result file and its page)

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "results" / "data" / "samplers.json"
OUT_PNG = ROOT / "docs" / "results" / "samplers_accuracy.png"


@dataclass
class Config:
    """One sampler setting: ``eps_scale`` multiplies the NCSNv2 step rule (annealed Langevin)."""

    label: str
    sampler: str
    levels: int
    sigma_1: float = 10.0
    sigma_L: float = 0.01
    eps_scale: float | None = None
    params: dict = field(default_factory=dict)

    def sigmas(self) -> torch.Tensor:
        return geometric(self.sigma_1, self.sigma_L, self.levels).double()

    def build(self):
        params = dict(self.params)
        if self.eps_scale is not None:
            steps = params.get("steps_per_level", 5)
            params["eps"] = self.eps_scale * langevin_step_size(self.sigmas(), steps)
        return invdiff.create("sampler", self.sampler, progress=False, **params), params


AL, PC, HEUN, DPM = "annealed-langevin", "predictor-corrector", "heun", "dpm-2m"
ODE = (HEUN, DPM)
CONFIGS = [
    # annealed Langevin: defaults (T = 5, NCSNv2 eps), then larger steps and fewer levels
    Config("AL L=60 T=5 (default eps)", AL, 60),
    Config("AL L=100 T=5 (default eps)", AL, 100),
    Config("AL L=60 T=5 no denoise", AL, 60, params={"final_denoise": False}),
    Config("AL L=100 T=5 eps x2", AL, 100, eps_scale=2),
    Config("AL L=50 T=5 eps x4", AL, 50, eps_scale=4),
    Config("AL L=100 T=5 eps x4", AL, 100, eps_scale=4),
    Config("AL L=50 T=3 eps x4", AL, 50, eps_scale=4, params={"steps_per_level": 3}),
    Config("AL L=50 T=2 eps x8", AL, 50, eps_scale=8, params={"steps_per_level": 2}),
    Config("AL L=30 T=5 eps x8", AL, 30, eps_scale=8),
    Config("AL L=50 T=5 eps x8", AL, 50, eps_scale=8),
    Config("AL L=100 T=1 eps x8", AL, 100, eps_scale=8, params={"steps_per_level": 1}),
    # predictor-corrector: defaults (snr 0.16, K = 1), snr and K, predictor only
    Config("PC L=50 K=1 snr=0.16", PC, 50),
    Config("PC L=100 K=1 snr=0.16 (default)", PC, 100),
    Config("PC L=100 K=1 snr=0.08", PC, 100, params={"snr": 0.08}),
    Config("PC L=100 K=1 snr=0.25", PC, 100, params={"snr": 0.25}),
    Config("PC L=66 K=2 snr=0.25", PC, 66, params={"snr": 0.25, "corrector_steps": 2}),
    Config("PC L=250 K=1 snr=0.16", PC, 250),
    Config("PC L=200 K=1 snr=0.08", PC, 200, params={"snr": 0.08}),
    Config("PC L=100 K=0", PC, 100, params={"corrector_steps": 0}),
    Config("PC L=200 K=0", PC, 200, params={"corrector_steps": 0}),
    Config("PC L=200 K=0 no denoise", PC, 200,
           params={"corrector_steps": 0, "final_denoise": False}),
    Config("PC L=200 K=0 sigma_L=0.02", PC, 200, sigma_L=0.02, params={"corrector_steps": 0}),
    Config("PC L=150 K=0 sigma_L=0.025", PC, 150, sigma_L=0.025,
           params={"corrector_steps": 0}),
    Config("PC L=200 K=0 sigma_L=0.025", PC, 200, sigma_L=0.025,
           params={"corrector_steps": 0}),
    Config("PC L=100 K=1 sigma_L=0.025", PC, 100, sigma_L=0.025),
    # ODE samplers: their own schedule between the ladder's ends (10 and 0.01); N levels
    Config("Heun N=13 rho=7", HEUN, 2, params={"steps": 13}),
    Config("Heun N=18 rho=7", HEUN, 2, params={"steps": 18}),
    Config("Heun N=25 rho=7 (default)", HEUN, 2, params={"steps": 25}),
    Config("Heun N=25 geometric", HEUN, 2, params={"steps": 25, "rho": None}),
    Config("Heun N=25 Tweedie end", HEUN, 2, params={"steps": 25, "final_step": "tweedie"}),
    Config("Heun N=25 start N(0, sigma_max^2)", HEUN, 2,
           params={"steps": 25, "shift_start": False}),
    Config("Heun N=25 geometric churn=10", HEUN, 2,
           params={"steps": 25, "rho": None, "s_churn": 10.0}),
    Config("DPM-2M N=12", DPM, 2, params={"steps": 12}),
    Config("DPM-2M N=18", DPM, 2, params={"steps": 18}),
    Config("DPM-2M N=24 (default)", DPM, 2, params={"steps": 24}),
    Config("DPM-2M N=48", DPM, 2, params={"steps": 48}),
    Config("DPM-2M N=24 rho=7", DPM, 2, params={"steps": 24, "rho": 7.0}),
    Config("DPM-2M N=24 Tweedie end", DPM, 2, params={"steps": 24, "final_step": "tweedie"}),
]


def recursion_std_ratio(cfg: Config, sampler, post) -> torch.Tensor | None:
    """Noise-free expected per-pixel std ratio of a fixed-step sampler (see module doc)."""
    if cfg.sampler == PC and sampler.corrector_steps > 0:
        return None
    if cfg.sampler in ODE:
        return ode_std_ratio(cfg, sampler, post)
    lam, u = post._evals, post._evecs  # S = U diag(lam) U^T
    s = cfg.sigmas().tolist()
    var = torch.full_like(lam, s[0] ** 2)
    if cfg.sampler == AL:
        eps = sampler.prepare(cfg.sigmas())["eps"]
        for sig in s:
            a = eps * (sig / s[-1]) ** 2
            for _ in range(sampler.steps_per_level):
                var = (1 - a / (lam + sig**2)) ** 2 * var + 2 * a
    else:
        for sig, nxt in zip(s, s[1:] + [0.0], strict=True):
            if nxt == 0.0 and sampler.final_denoise:
                break
            d = sig**2 - nxt**2
            var = (1 - d / (lam + sig**2)) ** 2 * var + d
    if sampler.final_denoise:
        var = (lam / (lam + s[-1] ** 2)) ** 2 * var
    return ((u**2) @ var).sqrt() / post.std.flatten()


class _DiagonalScore:
    """Score of N(0, diag(lam)) on one row of D pixels; remembers the first x it is given."""

    y_shape = (1,)

    def __init__(self, lam: torch.Tensor) -> None:
        self.lam, self.x_shape, self.first = lam, (1, 1, lam.numel()), None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.first is None:
            self.first = x.clone()
        return -x / (self.lam.to(x) + sigma.reshape(-1, 1, 1, 1) ** 2)


def ode_std_ratio(cfg: Config, sampler, post) -> torch.Tensor | None:
    """The deterministic ODE sampler's exact std ratio: in S's eigenbasis it maps the start
    x ~ N(0, sigma_max^2) to G x (G per direction), read off one chain of the sampler itself."""
    if getattr(sampler, "s_churn", 0.0) > 0:
        return None
    lam, u = post._evals, post._evecs
    score = _DiagonalScore(lam)
    res = sampler.sample(score, torch.zeros(1, 1, dtype=torch.float64), cfg.sigmas(), 1,
                         generator=torch.Generator().manual_seed(0))
    gain = res.samples.reshape(-1) / score.first.reshape(-1)
    var = (gain * res.info["sigmas"][0]) ** 2
    return ((u**2) @ var).sqrt() / post.std.flatten()


def _rec(rec: torch.Tensor | None) -> dict | None:
    return None if rec is None else {"mean": float(rec.mean()),
                                     "max_error": float((rec - 1).abs().max())}


def recursion_16() -> list[dict]:
    """The noise-free std ratio of every fixed-step setting on the 16x16 problem."""
    prob, _ = reference_case(n=16, mask_fraction=0.5)
    rows = []
    for cfg in CONFIGS:
        sampler, _ = cfg.build()
        rec = recursion_std_ratio(cfg, sampler, prob.posterior)
        if rec is not None:
            nfe = sampler.nfe_per_chain(cfg.params.get("steps", cfg.levels))
            rows.append({"label": cfg.label, "nfe": nfe, "recursion": _rec(rec)})
    return rows


class _SnappedScore:
    """The exact score evaluated at the nearest ladder level (in log sigma) to the sigma asked."""

    def __init__(self, score, ladder: torch.Tensor) -> None:
        self.score, self.log_ladder = score, ladder.double().log()
        self.x_shape, self.y_shape = score.x_shape, score.y_shape

    def __call__(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        i = (sigma.double().log()[:, None] - self.log_ladder[None]).abs().argmin(1)
        return self.score(x, y, self.log_ladder[i].exp().to(sigma))


def _accuracy(a) -> dict:
    return {"mean_error": a.mean_error, "std_ratio": a.mean_std_ratio,
            "max_std_error": a.max_std_error}


def ladder_only(n_samples: int) -> list[dict]:
    """ODE samplers on a score known only at the levels of 60- and 20-level ladders."""
    prob, y = reference_case(n=8, mask_fraction=0.5)
    post = prob.posterior
    mean = post.mean(y)
    rows = []
    for levels in (60, 20):
        ladder = geometric(10.0, 0.01, levels).double()
        score = _SnappedScore(post.score_fn(), ladder)
        for name, label in ((HEUN, "Heun N=25 rho=7"), (DPM, "DPM-2M N=24")):
            for on in (False, True):
                res = invdiff.create("sampler", name, progress=False, on_ladder=on).sample(
                    score, y, ladder, n_samples, generator=torch.Generator().manual_seed(0))
                a = gaussian_accuracy(res.samples, mean, post.cov)
                rows.append({"levels": levels, "label": label, "on_ladder": on, "nfe": res.nfe,
                             **_accuracy(a)})
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _setting(label: str, sampler: str, nfe: int, seconds: float, a, rec) -> dict:
    return {"label": label, "sampler": sampler, "nfe": nfe, "seconds": seconds, **_accuracy(a),
            "recursion": _rec(rec), "w2": a.w2}


def run(n_samples: int) -> list[dict]:
    prob, y = reference_case(n=8, mask_fraction=0.5)
    post = prob.posterior
    mean, score = post.mean(y), post.score_fn()
    exact = post.sample(y, n_samples, generator=torch.Generator().manual_seed(7))
    rows = [_setting("exact (MC floor)", "exact", 0, 0.0,
                     gaussian_accuracy(exact, mean, post.cov), None)]
    for cfg in CONFIGS:
        sampler, _ = cfg.build()
        t0 = time.perf_counter()
        res = sampler.sample(score, y, cfg.sigmas(), n_samples,
                             generator=torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - t0
        rows.append(_setting(cfg.label, cfg.sampler, res.nfe, seconds,
                             gaussian_accuracy(res.samples, mean, post.cov),
                             recursion_std_ratio(cfg, sampler, post)))
        print(results_pages.md_row(results_pages.sampler_row(rows[-1])), file=sys.stderr,
              flush=True)
    return rows


#: (sampler, bound, budget): std within this fraction at <= this many nfe
GOALS = [(AL, 0.05, 500), (PC, 0.01, 200), (HEUN, 0.02, 50), (HEUN, 0.05, 25), (DPM, 0.02, 50),
         (DPM, 0.05, 25)]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    floor = rows[0]["w2"]
    for name, marker in ((AL, "o"), (PC, "s"), (HEUN, "^"), (DPM, "D")):
        pts = [r for r in rows if r["sampler"] == name]
        nfe = [r["nfe"] for r in pts]
        axes[0].scatter(nfe, [abs(r["std_ratio"] - 1) for r in pts], marker=marker, label=name)
        axes[1].scatter(nfe, [r["w2"] for r in pts], marker=marker, label=name)
    for level, text in ((0.01, "1%"), (0.02, "2%"), (0.05, "5%")):
        axes[0].axhline(level, color="grey", lw=0.8, ls="--")
        axes[0].text(0.02, level * 1.08, text, color="grey", fontsize=8,
                     transform=axes[0].get_yaxis_transform())
    axes[1].axhline(floor, color="k", lw=0.8, ls=":", label="MC floor (exact samples)")
    axes[0].set(xscale="log", yscale="log", xlabel="score evaluations per chain",
                ylabel="|mean std ratio - 1|", title="marginal std error")
    axes[1].set(xscale="log", yscale="log", xlabel="score evaluations per chain",
                ylabel="Gaussian W2 to N(m, S)", title="distributional error")
    for ax in axes:
        ticks = [13, 25, 50, 100, 200, 500]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("8x8 blur+mask reference problem, exact score, 2 x n chains", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4000, help="samples per measurement")
    ap.add_argument("--quick", action="store_true", help="500 samples, print only")
    ap.add_argument("--out", type=Path, default=OUT_JSON, help="the result file (JSON)")
    ap.add_argument("--redraw", action="store_true",
                    help="only draw the figure again from the result file")
    args = ap.parse_args(argv)
    if args.redraw:
        plot(results_pages.read_runs(args.out)[-1]["settings"], OUT_PNG)
        return
    n = 500 if args.quick else args.samples
    with torch_threads(1):  # tiny matmuls: one thread is fastest on a shared machine
        rows = run(n)
        rec16 = recursion_16()
        snapped = ladder_only(n)
    if args.quick:
        print(json.dumps({"goals": results_pages.sampler_goals(rows, GOALS),
                          "recursion_16": rec16, "ladder_only": snapped}, indent=1))
        return
    figure = OUT_PNG if args.out.resolve() == OUT_JSON else args.out.with_suffix(".png")
    plot(rows, figure)
    results_pages.save_run(args.out, results_pages.new_run(
        results_pages.thread_settings("1 torch thread (set by the benchmark)"),
        results_pages.machine("torch"), samples_per_measurement=n, measurements=2,
        goals=[list(g) for g in GOALS], figure=figure.name, settings=rows,
        recursion_16=rec16, ladder_only=snapped))


if __name__ == "__main__":
    main()
