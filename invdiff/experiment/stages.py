"""The stages of an experiment, driven by an :class:`~invdiff.experiment.config.ExperimentConfig`.

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

Under ``torchrun`` (:mod:`invdiff.training.distributed`) every rank runs the same stage: rank 0
alone simulates missing data (the others wait for its files) and writes every file; training is
data-parallel and sampling shares the held-out measurements out over the ranks.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from invdiff.checks import check_training_pairs
from invdiff.data import Dataset, load_dataset
from invdiff.errors import CheckpointError, ConfigError, DataError
from invdiff.experiment.config import ExperimentConfig, parse_config, read_config_data

# deep_update is re-exported here: scripts merge config tables with `pipeline.deep_update`
from invdiff.experiment.config import deep_update as deep_update
from invdiff.experiment.lock import locked
from invdiff.io import atomic_write_text
from invdiff.plugins import create
from invdiff.training import distributed

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


def _simulation_settings(cfg: ExperimentConfig, which: str) -> dict[str, Any]:
    """The settings ``simulate`` is called with for ``which`` ("train" or "test"): the same
    values make the dataset's ``meta["signature"]``, so stages can check their data."""
    d = cfg.data
    n, seed = ((d.n_train + d.n_val, d.seed) if which == "train"
               else (d.n_test, d.seed + TEST_SEED_OFFSET))
    return {"n": n, "chunk_size": d.chunk_size, "seed": seed,
            "spec": cfg.problem.model_dump(mode="json")}


def _simulate(cfg: ExperimentConfig, which: str, progress: bool) -> Dataset:
    from invdiff.data.simulation import simulate

    prior, fwd, noise = build_problem(cfg)
    return simulate(prior, fwd, noise, workers=cfg.data.workers,
                    path=output_paths(cfg)[which], progress=progress,
                    executor=cfg.data.executor, scheduler=cfg.data.scheduler,
                    **_simulation_settings(cfg, which))


@locked
def run_simulate(cfg: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """Simulate ``n_train + n_val`` training pairs and ``n_test`` held-out pairs (under
    torchrun: on rank 0, while the other ranks wait for its files)."""
    paths = output_paths(cfg)
    if not distributed.context().is_main:
        distributed.wait_for_files(paths["train"], paths["test"])
        return {"train": str(paths["train"]), "test": str(paths["test"])}
    train = _simulate(cfg, "train", progress)
    test = _simulate(cfg, "test", progress)
    return {"train": str(paths["train"]), "n_train_val": len(train),
            "dropped": train.meta.get("dropped", 0), "test": str(paths["test"]),
            "n_test": len(test)}


def make_ladder(cfg: ExperimentConfig, train: Dataset) -> tuple[torch.Tensor, list[str]]:
    """The noise ladder: config values where set, NCSNv2 heuristics for the rest (on x in
    the units the net trains in)."""
    from invdiff.sampling.sigmas import geometric, suggest
    from invdiff.training import training_normalization

    check_training_pairs(train.x, train.y, train.y_clean)  # before the ladder measures x
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
    if not (paths["train"].exists() and paths["test"].exists()):  # (rank 0 makes them)
        run_simulate(cfg, progress)
    return tuple(_checked_dataset(cfg, which) for which in ("train", "test"))


def _checked_dataset(cfg: ExperimentConfig, which: str) -> Dataset:
    """The ``which`` dataset of the output folder, refused unless its signature is the one
    this config's problem and data settings give (data of another prior, size or seed would
    otherwise be trained on or scored silently)."""
    from invdiff.data.simulation import simulation_signature

    path = output_paths(cfg)[which]
    ds = load_dataset(path)
    want = _simulation_settings(cfg, which)
    have = ds.meta.get("signature")
    if have is None:
        warnings.warn(f"{path} records no simulation signature (not written by invdiff "
                      f"simulate); its settings cannot be checked against the config",
                      stacklevel=3)
    elif have != simulation_signature(**want):
        differ = _differences(want, {k: ds.meta.get("n_requested" if k == "n" else k)
                                     for k in want})
        raise DataError(
            f"{path} was simulated with other settings than this config ({differ}); use "
            f"another output folder (--out), or delete {path.parent} and rerun "
            f"`invdiff simulate CONFIG` to simulate data for these settings"
        )
    return ds


def _differences(want: Any, have: Any, prefix: str = "") -> str:
    """``key: old -> new`` for the leaves that differ between two nested dicts (at most 3)."""
    if isinstance(want, dict) and isinstance(have, dict):
        items = [_differences(want.get(k), have.get(k), f"{prefix}{k}.")
                 for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
        return "; ".join([i for i in items if i][:3])
    key = prefix.rstrip(".")
    key = "problem." + key[5:] if key.startswith("spec.") else key
    return f"{key}: data have {have!r}, config has {want!r}"


@locked
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
               "rank_batch": trainer.rank_batch, "loss_weighting": trainer.loss_weighting,
               "seconds": trainer.history[-1]["seconds"]
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
        from invdiff.evaluation.figures import loss_figure

        loss_figure(paths["figures"] / "loss.png", trainer.history, title=cfg.name)
    return {k: v for k, v in summary.items() if k != "history"}


@locked
def run_sample(
    cfg: ExperimentConfig, checkpoint: str | Path | None = None, progress: bool = True,
    source: str = "CONFIG",
) -> dict[str, Any]:
    """Sample the posterior of each held-out measurement; write metrics and figures.

    ``source`` names the config in hints (the CLI passes the path the user typed)."""
    from invdiff.evaluation.metrics import sample_metrics
    from invdiff.evaluation.verdicts import describe_metrics, field_labels
    from invdiff.training.checkpoint import load_model

    paths = output_paths(cfg)
    ckpt = Path(checkpoint) if checkpoint else paths["final"]
    if not ckpt.exists():
        raise CheckpointError(f"no trained model at {ckpt}; run `invdiff train {source} "
                              f"--out {cfg.out_dir}` first")
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
    problem = build_problem(cfg)
    labels = field_labels(*problem[:2])  # what x and y are, for metrics.json and the figures
    ref, note = _reference(cfg, problem, test, progress)
    metrics = sample_metrics(samples, test.x, ref)
    metrics.update({"sampler": s.sampler.name, "n_samples": s.n_samples,
                    "n_measurements": len(test), "nfe": post.nfe,
                    "seconds": post.seconds, "world_size": ctx.world_size,
                    "reference": ref.kind if ref else None,
                    "checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt),
                    "sampling_config": s.model_dump(mode="json")})
    if ref is not None:
        metrics.update({"ref_measurements": ref.index, "ref_seconds": ref.seconds,
                        **{f"ref_{k}": v for k, v in ref.info.items()
                           if isinstance(v, int | float | str)}})
    if note:
        metrics["reference_note"] = note
    metrics.update(describe_metrics(metrics, labels))
    atomic_write_text(paths["metrics"], json.dumps(metrics, indent=2))
    if cfg.output.figures:
        from invdiff.evaluation.figures import posterior_figure

        at = {m: k for k, m in enumerate(ref.index)} if ref is not None else {}
        for m in range(min(len(test), 4)):
            k = at.get(m)
            posterior_figure(
                paths["figures"] / f"posterior_{m}.png", test.x[m], test.y[m], samples[m],
                None if k is None else ref.mean[k],
                None if k is None or ref.std is None else ref.std[k],
                title=f"{cfg.name}: held-out measurement {m} ({s.sampler.name}, "
                      f"{post.nfe} score evaluations)", labels=labels)
    return metrics


def _reference(cfg: ExperimentConfig, problem: tuple[Any, Any, Any], test: Dataset,
               progress: bool) -> tuple[Any, str]:
    """The reference posterior of the held-out measurements (the config's
    ``sampling.reference``, else the prior's own), MCMC chains cached in ``<out>/references``;
    and a note when the prior's reference does not fit this problem (a reference the config
    names must fit: that is an error)."""
    from invdiff.evaluation.references import config_reference, reference_on

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


def _sample_shared_out(model: Any, y: torch.Tensor, s: Any, params: dict[str, Any],
                       ctx: distributed.DistContext) -> Any:
    """The posterior of every measurement in ``y (M, *y_shape)``, each rank sampling its
    share (:func:`invdiff.training.distributed.shard`) with chains seeded by the measurement index;
    gathered on rank 0 in measurement order (None on the other ranks). ``seconds`` is the
    slowest rank's total."""
    from invdiff.sampling.posterior import Posterior, sample_measurements

    mine = list(distributed.shard(len(y), ctx))  # empty on rank r >= M
    post = sample_measurements(model, y[mine].to(model.sigmas.device), s.seed, mine,
                               sampler=s.sampler.name, n=s.n_samples, threads=s.threads,
                               **params) if mine else None
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


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (what ties ``metrics.json`` to the checkpoint it sampled)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_trained(cfg: ExperimentConfig) -> bool:
    """Whether ``final.pt`` finished this config's training (same experiment up to the
    output folder, name and sampling settings, all ``training.steps`` done)."""
    from invdiff.training.checkpoint import load_checkpoint

    paths = output_paths(cfg)
    if not (paths["final"].is_file() and paths["history"].is_file()):
        return False
    try:
        ckpt = load_checkpoint(paths["final"])
    except CheckpointError:
        return False  # unreadable: train again (resuming from last.pt where possible)
    ignore = ("output", "name", "sampling")
    old = {k: v for k, v in (ckpt["experiment"] or {}).items() if k not in ignore}
    new = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ignore}
    return int(ckpt["step"]) == cfg.training.steps and old == new


def _sampled(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The metrics of an earlier ``run_sample`` of this very checkpoint with these sampling
    settings (figures included, when asked for), or None."""
    paths = output_paths(cfg)
    if not (paths["metrics"].is_file() and paths["posterior"].is_file()):
        return None
    if cfg.output.figures and not (paths["figures"] / "posterior_0.png").is_file():
        return None
    try:
        metrics = json.loads(paths["metrics"].read_text())
    except (OSError, ValueError):
        return None
    same = (metrics.get("checkpoint") == str(paths["final"])
            and metrics.get("sampling_config") == cfg.sampling.model_dump(mode="json")
            and metrics.get("checkpoint_sha256") == file_sha256(paths["final"]))
    return metrics if same else None


@locked
def run_run(cfg: ExperimentConfig, progress: bool = True,
            say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All stages: simulate, train, sample. A stage whose outputs are complete and match the
    config is reused, not redone (``say`` reports which, one line each)."""
    say = say or (lambda message: None)
    paths = output_paths(cfg)
    had_data = paths["train"].is_file() and paths["test"].is_file()
    run_simulate(cfg, progress)  # an existing dataset is checked against the config and kept
    if had_data:
        say(f"reused the simulated data in {paths['train'].parent} (same settings)")
    if is_trained(cfg):
        say(f"reused the trained model {paths['final']} ({cfg.training.steps} steps done)")
    else:
        run_train(cfg, progress)
    metrics = _sampled(cfg)
    if metrics is not None:
        say(f"reused the posterior samples and {paths['metrics']} (same model and sampler "
            f"settings); delete {paths['metrics']} to sample again")
        return metrics
    return run_sample(cfg, progress=progress)


def embedded_config_path(name: str = "demo-elasticity") -> Path:
    """The path of a config shipped with invdiff (``invdiff/configs/NAME.toml``)."""
    return Path(str(resources.files("invdiff").joinpath("configs", f"{name}.toml")))


def embedded_config(name: str = "demo-elasticity") -> dict[str, Any]:
    """The tables of a config shipped with invdiff, ``extends`` resolved (not validated)."""
    return read_config_data(embedded_config_path(name))


DEMOS = ("elasticity", "reference")


def demo_name(problem: str = "elasticity", quick: bool = False) -> str:
    """The embedded config of a demo: ``demo-PROBLEM`` or ``demo-PROBLEM-quick``."""
    if problem not in DEMOS:
        raise ConfigError(f"unknown demo {problem!r}; choose one of {', '.join(DEMOS)}")
    return f"demo-{problem}" + ("-quick" if quick else "")


def demo_out_dir(problem: str = "elasticity", quick: bool = False) -> Path:
    """Each demo's own default folder, so that no two clash: ``runs/demo`` (elasticity),
    ``runs/demo-reference``, and ``-quick`` after either for the smoke runs."""
    stem = "demo" if problem == "elasticity" else f"demo-{problem}"
    return Path("runs") / (stem + ("-quick" if quick else ""))


def demo_config(problem: str = "elasticity", quick: bool = False,
                out: str | Path | None = None) -> ExperimentConfig:
    """The validated config of a demo, writing to ``out`` (default :func:`demo_out_dir`)."""
    name = demo_name(problem, quick)
    data = embedded_config(name)
    data.setdefault("output", {})["dir"] = str(out or demo_out_dir(problem, quick))
    return parse_config(data, f"invdiff/configs/{name}.toml")


def run_demo(out: str | Path | None = None, quick: bool = False, progress: bool = True,
             problem: str = "elasticity",
             say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The README demo: an embedded config (``invdiff/configs/demo-PROBLEM.toml``) end to end.
    ``quick`` runs ``demo-PROBLEM-quick.toml`` instead (a smoke test of the pipeline, not a
    meaningful posterior). Finished stages are reused (:func:`run_run`)."""
    return run_run(demo_config(problem, quick, out), progress, say)
