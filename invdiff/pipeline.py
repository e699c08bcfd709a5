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
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import torch

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
                    spec=spec)


def run_simulate(cfg: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """Simulate ``n_train + n_val`` training pairs and ``n_test`` held-out pairs."""
    paths = output_paths(cfg)
    d = cfg.data
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
    # T of the NCSNv2 rule: the sampler's Langevin steps per level where it declares them
    # (Sampler.steps_per_level), else the rule's default 5
    spec = cfg.sampling.sampler
    steps = int(getattr(create("sampler", spec.name, **spec.params), "steps_per_level", 5))
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
    if not (paths["train"].exists() and paths["test"].exists()):
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
    summary = {"steps": trainer.step, "seconds": trainer.history[-1]["seconds"]
               if trainer.history else None,
               "val_loss_ema": trainer.history[-1].get("val_loss_ema") if trainer.history
               else None,
               "n_levels": len(sigmas), "sigma_1": float(sigmas[0]),
               "sigma_L": float(sigmas[-1]), "ladder_reasoning": reasoning,
               "parameters": sum(p.numel() for p in net.parameters()),
               "history": trainer.history}
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
    from invdiff.metrics import sample_metrics
    from invdiff.posterior import sample_posterior

    paths = output_paths(cfg)
    ckpt = Path(checkpoint) if checkpoint else paths["final"]
    if not ckpt.exists():
        raise CheckpointError(f"no trained model at {ckpt}; run `invdiff train CONFIG` first")
    device = cfg.training_config().device
    model = load_model(ckpt, device=device)
    _, test = _datasets(cfg, progress)
    s = cfg.sampling
    params = _with_progress("sampler", s.sampler.name, dict(s.sampler.params), progress)
    gen = torch.Generator(device=model.sigmas.device).manual_seed(s.seed)
    post = sample_posterior(model, test.y.to(model.sigmas.device), sampler=s.sampler.name,
                            n=s.n_samples, generator=gen, **params)
    post.save(paths["posterior"])

    samples = post.samples.cpu()
    ref, note = _reference(cfg, test, progress)
    metrics = sample_metrics(samples, test.x, ref)
    metrics.update({"sampler": s.sampler.name, "n_samples": s.n_samples,
                    "n_measurements": len(test), "nfe": post.nfe,
                    "seconds": post.seconds, "reference": ref.kind if ref else None,
                    "checkpoint": str(ckpt)})
    if ref is not None:
        metrics.update({"ref_measurements": ref.index, "ref_seconds": ref.seconds,
                        **{f"ref_{k}": v for k, v in ref.info.items()
                           if isinstance(v, int | float | str)}})
    if note:
        metrics["reference_note"] = note
    atomic_write_text(paths["metrics"], json.dumps(metrics, indent=2))
    if cfg.output.figures:
        from invdiff.figures import posterior_figure

        at = {m: k for k, m in enumerate(ref.index)} if ref is not None else {}
        for m in range(min(len(test), 4)):
            k = at.get(m)
            posterior_figure(
                paths["figures"] / f"posterior_{m}.png", test.x[m], test.y[m], samples[m],
                None if k is None else ref.mean[k],
                None if k is None or ref.std is None else ref.std[k],
                title=f"{cfg.name}: held-out measurement {m} ({s.sampler.name}, "
                      f"{post.nfe} score evaluations)")
    return metrics


def _reference(cfg: ExperimentConfig, test: Dataset, progress: bool) -> tuple[Any, str]:
    """The reference posterior of the held-out measurements (the config's
    ``sampling.reference``, else the prior's own), MCMC chains cached in ``<out>/references``;
    and a note when the prior's reference does not fit this problem (a reference the config
    names must fit: that is an error)."""
    from invdiff.evaluation.references import config_reference, reference_on

    problem = build_problem(cfg)
    spec = config_reference(cfg, problem[0])
    if spec is not None:
        spec = spec.model_copy(update={"params": _with_progress(
            "reference", spec.name, dict(spec.params), progress)})
    try:
        return reference_on(spec, problem, test.y, test.y_clean,
                            cache=cfg.out_dir / "references"), ""
    except ConfigError as exc:
        if cfg.sampling.reference is not None:
            raise ConfigError(f"sampling.reference: {exc}") from None
        return None, str(exc)


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
