"""The stages of an experiment, driven by an :class:`~invdiff.config.ExperimentConfig`.

``run_simulate`` -> ``run_train`` -> ``run_sample`` (``run_run`` does all three). Each stage
writes into ``output.dir`` and picks up what an earlier (or interrupted) run left there:

```
<out>/data/train.npz, data/test.npz     simulated pairs (resumable chunks while running)
<out>/checkpoints/last.pt, final.pt     training state (resume) and the final model
<out>/training.json                     loss history and the ladder with its reasoning
<out>/posterior.npz                     samples, mean, std of the held-out measurements
<out>/metrics.json                      accuracy and cost
<out>/figures/*.png                     posterior panels, loss curve
```

Under ``torchrun`` (:mod:`invdiff.distributed`) every rank runs the same stage: rank 0 alone
simulates missing data (the others wait for its files) and writes every file; training is
data-parallel and sampling shares the held-out measurements out over the ranks.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from invdiff import distributed
from invdiff.config import ExperimentConfig, parse_config
from invdiff.data import Dataset, load_dataset
from invdiff.errors import CheckpointError, ConfigError
from invdiff.io import atomic_write_text
from invdiff.plugins import create

TEST_SEED_OFFSET = 104_729  # test pairs use another master seed than training pairs


def build_problem(cfg: ExperimentConfig) -> tuple[Any, Any, Any]:
    """Prior, forward model and noise model of the config."""
    p = cfg.problem
    return (create("prior", p.prior.name, **p.prior.params),
            create("forward_model", p.forward_model.name, **p.forward_model.params),
            create("noise_model", p.noise_model.name, **p.noise_model.params))


def output_paths(cfg: ExperimentConfig) -> dict[str, Path]:
    """Where each stage of the experiment reads and writes (see the module docstring)."""
    out = cfg.out_dir
    return {"train": out / "data" / "train.npz", "test": out / "data" / "test.npz",
            "ckpt_dir": out / "checkpoints", "final": out / "checkpoints" / "final.pt",
            "history": out / "training.json", "posterior": out / "posterior.npz",
            "metrics": out / "metrics.json", "figures": out / "figures"}


def _simulate(cfg: ExperimentConfig, n: int, seed: int, path: Path, progress: bool) -> Dataset:
    from invdiff.simulation import simulate

    prior, fwd, noise = build_problem(cfg)
    spec = cfg.problem.model_dump(mode="json")
    return simulate(prior, fwd, noise, n=n, chunk_size=cfg.data.chunk_size,
                    workers=cfg.data.workers, seed=seed, path=path, progress=progress,
                    spec=spec, executor=cfg.data.executor, scheduler=cfg.data.scheduler)


def run_simulate(cfg: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """Simulate ``n_train + n_val`` training pairs and ``n_test`` held-out pairs (under
    torchrun: on rank 0, while the other ranks wait for its files)."""
    paths = output_paths(cfg)
    d = cfg.data
    if not distributed.context().is_main:
        distributed.wait_for_files(paths["train"], paths["test"])
        return {"train": str(paths["train"]), "test": str(paths["test"])}
    train = _simulate(cfg, d.n_train + d.n_val, d.seed, paths["train"], progress)
    test = _simulate(cfg, d.n_test, d.seed + TEST_SEED_OFFSET, paths["test"], progress)
    return {"train": str(paths["train"]), "n_train_val": len(train),
            "dropped": train.meta.get("dropped", 0), "test": str(paths["test"]),
            "n_test": len(test)}


def make_ladder(cfg: ExperimentConfig, train: Dataset) -> tuple[torch.Tensor, list[str]]:
    """The noise ladder: config values where set, NCSNv2 heuristics for the rest (on x in
    the units the net trains in)."""
    from invdiff.sigmas import geometric, suggest
    from invdiff.training import training_normalization

    lad = cfg.ladder
    steps = int(cfg.sampling.sampler.params.get("steps_per_level", 5))
    x_n = training_normalization(train, cfg.training_config()).normalize_x(train.x)
    sug = suggest(x_n, sigma_L=lad.sigma_L, steps_per_level=steps)
    sigma_1 = lad.sigma_1 if lad.sigma_1 is not None else sug.sigma_1
    n_levels = lad.n_levels if lad.n_levels is not None else sug.n_levels
    reasoning = list(sug.reasoning)
    if lad.sigma_1 is not None or lad.n_levels is not None:
        reasoning.append(f"config sets sigma_1 = {sigma_1:.4g}, L = {n_levels}")
    return geometric(sigma_1, lad.sigma_L, n_levels), reasoning


def build_net(cfg: ExperimentConfig, x_shape: tuple, y_shape: tuple) -> tuple[Any, dict]:
    """The score net of the config for these shapes, and the spec that rebuilds it."""
    params = {**cfg.net.params, "x_shape": list(x_shape), "y_shape": list(y_shape)}
    # Initial weights come from torch's global generator: seed it from the config (without
    # disturbing the caller's stream), so that two fresh runs of one config are identical.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.training.seed)
        net = create("score_net", cfg.net.name, **params)
    return net, {"name": cfg.net.name, "params": params}


def _datasets(cfg: ExperimentConfig, progress: bool) -> tuple[Dataset, Dataset]:
    paths = output_paths(cfg)
    if not (paths["train"].exists() and paths["test"].exists()):  # (rank 0 makes them)
        run_simulate(cfg, progress)
    return load_dataset(paths["train"]), load_dataset(paths["test"])


def run_train(cfg: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """Train (resuming from ``checkpoints/last.pt`` if an earlier run was interrupted)."""
    from invdiff.training import Trainer

    paths = output_paths(cfg)
    full, _ = _datasets(cfg, progress)
    train, val = full.split(cfg.data.n_val) if cfg.data.n_val else (full, None)
    sigmas, reasoning = make_ladder(cfg, train)
    net, net_spec = build_net(cfg, full.x_shape, full.y_shape)
    _, _, noise = build_problem(cfg)
    trainer = Trainer(net, train, sigmas, cfg.training_config(), val=val, noise_model=noise,
                      checkpoint_dir=paths["ckpt_dir"], net_spec=net_spec,
                      experiment=cfg.model_dump(mode="json"), progress=progress)
    trainer.fit(resume=True)
    summary = {"steps": trainer.step, "world_size": trainer.dist.world_size,
               "rank_batch": trainer.rank_batch, "seconds": trainer.history[-1]["seconds"]
               if trainer.history else None,
               "val_loss_ema": trainer.history[-1].get("val_loss_ema") if trainer.history
               else None,
               "n_levels": len(sigmas), "sigma_1": float(sigmas[0]),
               "sigma_L": float(sigmas[-1]), "ladder_reasoning": reasoning,
               "parameters": sum(p.numel() for p in net.parameters()),
               "history": trainer.history}
    if not trainer.dist.is_main:  # rank 0 writes the files
        return {k: v for k, v in summary.items() if k != "history"}
    atomic_write_text(paths["history"], json.dumps(summary, indent=2))
    if cfg.output.figures and trainer.history:
        from invdiff.figures import loss_figure

        loss_figure(paths["figures"] / "loss.png", trainer.history)
    return {k: v for k, v in summary.items() if k != "history"}


def run_sample(
    cfg: ExperimentConfig, checkpoint: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Sample the posterior of each held-out measurement; write metrics and figures."""
    from invdiff.checkpoint import load_model
    from invdiff.metrics import posterior_metrics, reference_moments

    paths = output_paths(cfg)
    ckpt = Path(checkpoint) if checkpoint else paths["final"]
    if not ckpt.exists():
        raise CheckpointError(f"no trained model at {ckpt}; run `invdiff train CONFIG` first")
    device = torch.device(cfg.training_config().device)
    ctx = distributed.setup(device)
    model = load_model(ckpt, device=distributed.device_for(device, ctx))
    _, test = _datasets(cfg, progress)
    s = cfg.sampling
    params = _with_progress("sampler", s.sampler.name, dict(s.sampler.params),
                            progress and ctx.is_main)
    post = _sample_shared_out(model, test.y, s, params, ctx)
    if post is None:  # another rank than 0: its measurements went to rank 0
        return {"rank": ctx.rank, "world_size": ctx.world_size}
    post.save(paths["posterior"])

    samples = post.samples.cpu()
    ref = reference_moments(*build_problem(cfg), test.y)
    ref_mean, ref_std = (ref[0], ref[1]) if ref else (None, None)
    metrics = posterior_metrics(samples, test.x, ref_mean, ref_std)
    metrics.update({"sampler": s.sampler.name, "n_samples": s.n_samples,
                    "n_measurements": len(test), "nfe": post.nfe,
                    "seconds": post.seconds, "world_size": ctx.world_size,
                    "reference": ref[2] if ref else None,
                    "checkpoint": str(ckpt)})
    atomic_write_text(paths["metrics"], json.dumps(metrics, indent=2))
    if cfg.output.figures:
        from invdiff.figures import posterior_figure

        for m in range(min(len(test), 4)):
            posterior_figure(
                paths["figures"] / f"posterior_{m}.png", test.x[m], test.y[m], samples[m],
                None if ref_mean is None else ref_mean[m],
                None if ref_std is None else ref_std[m],
                title=f"{cfg.name}: held-out measurement {m} ({s.sampler.name}, "
                      f"{post.nfe} score evaluations)")
    return metrics


def _sample_shared_out(model: Any, y: torch.Tensor, s: Any, params: dict[str, Any],
                       ctx: distributed.DistContext) -> Any:
    """The posterior of every measurement in ``y (M, *y_shape)``, each rank sampling its
    share (:func:`invdiff.distributed.shard`) with chains seeded by the measurement index;
    gathered on rank 0 in measurement order (None on the other ranks). ``seconds`` is the
    slowest rank's total."""
    from invdiff.posterior import Posterior, sample_measurements

    mine = list(distributed.shard(len(y), ctx))  # empty on rank r >= M
    post = sample_measurements(model, y[mine].to(model.sigmas.device), s.seed, mine,
                               sampler=s.sampler.name, n=s.n_samples, **params) if mine else None
    if not ctx.active:
        return post
    parts = distributed.all_gather((mine, None, 0, 0.0, {}) if post is None else
                                   (mine, post.samples.cpu(), post.nfe, post.seconds, post.info))
    if not ctx.is_main:
        return None
    order = torch.tensor([m for p in parts for m in p[0]]).argsort()
    samples = torch.cat([p[1] for p in parts if p[0]])[order]
    nfe, info = next((p[2], p[4]) for p in parts if p[0])
    return Posterior.from_samples(samples, post.quantile_levels, nfe=nfe,
                                  seconds=max(p[3] for p in parts), info=info)


def _with_progress(kind: str, name: str, params: dict[str, Any], progress: bool) -> dict:
    """Pass the progress switch on to a component whose parameters have one."""
    from invdiff.plugins import get_registry

    model = get_registry().get(kind, name).params
    if model is not None and "progress" in model.model_fields:
        params.setdefault("progress", progress)
    return params


def run_run(cfg: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """All stages: simulate, train, sample."""
    run_simulate(cfg, progress)
    run_train(cfg, progress)
    return run_sample(cfg, progress=progress)


def embedded_config(name: str = "demo-elasticity") -> dict[str, Any]:
    """An experiment config shipped with invdiff (``invdiff/configs/NAME.toml``)."""
    text = resources.files("invdiff").joinpath("configs", f"{name}.toml").read_text()
    return tomllib.loads(text)


def deep_update(base: dict[str, Any], over: dict[str, Any]) -> None:
    """Merge ``over`` into ``base`` in place, table by table (nested dicts merge, values
    replace)."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value


DEMOS = ("elasticity", "reference")


def run_demo(out: str | Path = "runs/demo", quick: bool = False, progress: bool = True,
             problem: str = "elasticity") -> dict[str, Any]:
    """The README demo: an embedded config (``invdiff/configs/demo-PROBLEM.toml``) end to end.
    ``quick`` shortens every stage (a smoke test of the pipeline, not a meaningful posterior)."""
    if problem not in DEMOS:
        raise ConfigError(f"unknown demo {problem!r}; choose one of {', '.join(DEMOS)}")
    data = embedded_config(f"demo-{problem}")
    data.setdefault("output", {})["dir"] = str(out)
    overrides = data.pop("quick", {})
    if quick:
        deep_update(data, overrides)
    cfg = parse_config(data, f"invdiff/configs/demo-{problem}.toml")
    return run_run(cfg, progress)
