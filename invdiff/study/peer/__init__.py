"""Peers: other libraries' posterior estimators on the study's own simulations.

A peer is a name and a function: it trains on the simulated training pairs of one (problem,
first training noise level), ``StudyRuns(...).get(problem, level).dataset("train")``, the very
pairs the cSDMs of that level train on, and returns posterior samples for the held-out
measurements, which the study scores with the same :func:`~invdiff.evaluation.score.score`
as its own cells (same truths, same reference posterior, same calibration levels). Its row
in ``results.csv`` carries the peer's name in the column ``peer`` (empty for the cSDM cells)
and its net and sampler names, e.g. ``sbi-npse-mlp`` and ``sbi-euler-maruyama``.

Shipped peers (:data:`PEERS`): ``sbi-npse``, sbi's neural posterior score estimation
(:mod:`.npse`), and ``bayesflow-fm``, BayesFlow's flow matching with its U-Net
(:mod:`.flow`). Their libraries are optional (``pip install invdiff[peers]``): a peer whose
library is missing, or that fails, leaves a note saying why instead of a row, and the study
goes on. :func:`register_peer` adds another.

Finished peer cells are cached under ``<runs>/<problem>/noise-<L>/peers/``, keyed by the
peer's settings, its library's version, the data's simulation signatures and the scoring
settings, so a rerun of the study reads them back instead of training again.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import catalog, flow, npse  # noqa: F401 - catalog registers the shipped peers
from .base import PEERS, Peer, PeerOutput, PeerTask, register_peer

__all__ = ["PEERS", "Peer", "PeerOutput", "PeerTask", "peer_title", "register_peer",
           "run_peers", "sbi_available"]

if TYPE_CHECKING:
    from ..preset import Preset
    from ..runner import StudyResult

#: the version of the peer cell rule: a cached peer cell's numbers depend on it
PEER_RULE = "peer/1"


sbi_available = npse.available  # kept: the name tests and older code import


def peer_title(names: Sequence[str]) -> str:
    """The report's heading of the peers ``names``."""
    labels = [PEERS[n].label if n in PEERS else n for n in names]
    return f"Peer: {' and '.join(labels) or 'none'} on the same simulations"


def run_peers(preset: Preset, problems: Sequence[str], result: StudyResult,
              log: Callable[[str], None]) -> list[str]:
    """Run the preset's peers (``[peer] peers``) on its peer problems among ``problems``, add
    their rows to ``result``; returns the notes for the report (what each peer was, or why its
    rows are missing)."""
    from ..runner import StudyRuns

    spec = preset.peer
    targets = [p for p in spec.problems_of(preset) if p in problems]
    if not spec.enabled or not targets:
        return []
    runs = StudyRuns(preset, progress=False)
    notes = []
    for name in spec.peers:
        peer = PEERS[name]
        why = peer.available()
        if why is not None:
            notes.append(why)
            log(why)
            continue
        described, details = None, []
        for problem in targets:
            try:
                row, description, detail = _run_cell(preset, runs, peer, problem, result)
            except Exception as exc:  # a failing peer leaves a note, never stops the study
                note = (f"{peer.label} on {problem} failed: {type(exc).__name__}: {exc}")
                log(note + "\n" + traceback.format_exc())
                notes.append(note)
                continue
            log(f"peer {name} {problem}: rmse {row['rmse_truth']:.4g}, std ratio "
                f"{row.get('std_ratio', float('nan')):.3g}, cov90 {row['coverage_90']:.2f}, "
                f"{row['seconds']:.3g} s/measurement")
            described = described or description
            details.append(f"{problem}: {detail}")
        if described:
            notes.append(f"{peer.label} (`{name}`): {described}. Trained on each problem's "
                         f"pairs ({'; '.join(details)}).")
    return notes


def _run_cell(preset: Preset, runs: Any, peer: Peer, problem: str,
              result: StudyResult) -> tuple[dict[str, Any], str, str]:
    """Train and sample one peer on one problem (or read its cached cell); add its row."""
    from invdiff.data.simulation import simulation_signature
    from invdiff.evaluation.score import score
    from invdiff.integrity import fingerprint

    from ..runner import held_out_set, problem_reference, read_cell, write_cell

    level = preset.problems[problem].noise_levels[0]
    data = runs.get(problem, level)
    h = held_out_set(runs, problem, level)
    ref = problem_reference(runs, h)
    params = preset.peer.params(peer.name)
    n = preset.samples_for(problem)
    key = fingerprint({
        "peer": peer.name, "version": peer.version(), "params": params.model_dump(mode="json"),
        "data": [simulation_signature(**data.simulation_settings(w)) for w in ("train", "test")],
        "n": n, "seed": preset.seed, "levels": preset.calibration_levels,
        "bins": preset.rank_bins, "device": preset.device, "rule": PEER_RULE}, length=12)
    cache = preset.run_dir(problem, level) / "peers" / f"{peer.name}-{key}.json"
    cached = read_cell(cache)
    if cached is not None:
        metrics, calib = cached
    else:
        train = data.dataset("train")
        task = PeerTask(problem, train.x.float(), train.y.float(), h.y.float(), n,
                        preset.seed, preset.device, params)
        t0 = time.perf_counter()
        out = peer.run(task)
        if out.samples.shape != (len(h.y), n, *h.x.shape[1:]):
            raise ValueError(f"peer {peer.name} returned samples of shape "
                             f"{tuple(out.samples.shape)}, expected "
                             f"{(len(h.y), n, *h.x.shape[1:])}")
        metrics, calib = score(out.samples.detach().cpu().to(h.x.dtype), h.x, ref,
                               h.components, preset.calibration_levels, preset.rank_bins)
        metrics.update(nfe=out.nfe, seconds=out.seconds / len(h.y),
                       n_test=metrics.pop("n_measurements"), train_seconds=out.train_seconds,
                       train_steps=out.train_steps, net=out.net, sampler=out.sampler,
                       description=out.description, detail=out.detail,
                       wall_seconds=time.perf_counter() - t0)
        write_cell(cache, metrics, calib)
    metrics = dict(metrics)
    description, detail = metrics.pop("description"), metrics.pop("detail", "")
    metrics.pop("wall_seconds", None)
    cell = {"problem": problem, "net": metrics.pop("net"), "sampler": metrics.pop("sampler"),
            "objective": "", "noise_param": preset.problems[problem].noise_param,
            "noise_train": level, "noise_test": level, "weights": "",
            "train_seconds": metrics.pop("train_seconds"),
            "train_steps": metrics.pop("train_steps"), "peer": peer.name}
    return result.add(cell, ref, metrics, calib), description, detail
