"""One trial of the search: build a candidate at phi = 1 and short-train it from scratch.

A plain function of plain data, so every backend runs the same code: in-process for
Optuna, in a worker process (on any node of a cluster) for Ray Tune.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from .bases import get_base
from .runs import SearchSettings
from .scaling import scale
from .spec import NetworkSpec

Report = Callable[[int, float], None]


@functools.lru_cache(maxsize=2)
def load_dataset(source: str, train_subset: int | None, val_subset: int | None, seed: int,
                 cache_dir: str | None, progress: bool = False):
    """The search's data set, opened once per process (decoded arrays are cached on disk)."""
    from .data import open_dataset

    return open_dataset(source, cache_dir=cache_dir, train_subset=train_subset, val_subset=val_subset,
                        seed=seed, progress=progress)


def dataset_for(settings: SearchSettings, progress: bool = False):
    return load_dataset(settings.dataset, settings.train_subset, settings.val_subset, settings.seed,
                        settings.cache_dir, progress)


def search_base(settings: SearchSettings, num_classes: int) -> NetworkSpec:
    """The base as searched: the data set's class count, at --resolution when given."""
    base = get_base(settings.base)
    return base.replace(num_classes=num_classes, resolution=settings.resolution or base.resolution)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


CANDIDATE_FIELDS = ("alpha", "beta", "gamma", "d", "w", "r", "resolution", "params", "flops", "flops_ratio", "acts")


def candidate_columns(candidate: dict[str, Any]) -> dict[str, Any]:
    """The part of a trials.csv row that describes the candidate itself."""
    return {"candidate": int(candidate["id"]), **{k: candidate[k] for k in CANDIDATE_FIELDS}}


def run_trial(candidate: dict[str, Any], settings: SearchSettings, report: Report | None = None,
              progress: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Train one candidate and return its trials.csv row (state COMPLETE)."""
    from .models import build
    from .train import TrainConfig, train_candidate

    dataset = dataset_for(settings)
    base = search_base(settings, dataset.num_classes)
    spec = scale(base, candidate["alpha"], candidate["beta"], candidate["gamma"])
    if spec.resolution != int(candidate["resolution"]):  # the candidate table and the scaler must agree
        raise RuntimeError(f"candidate {candidate['id']}: resolution {spec.resolution} != {candidate['resolution']}")
    config = TrainConfig(epochs=settings.epochs, images=settings.images, batch_size=settings.batch_size,
                         seed=settings.seed, device=resolve_device(settings.device), threads=threads,
                         **({"lr": settings.lr} if settings.lr else {}))
    import torch

    torch.manual_seed(settings.seed)  # the same initialisation stream for every candidate
    model = build(spec)
    result = train_candidate(model, dataset, spec.resolution, config, report=report, progress=progress,
                             desc=f"trial {candidate['id']} a={candidate['alpha']:g} b={candidate['beta']:g} "
                                  f"g={candidate['gamma']:.3f} {spec.resolution}px")
    return {**candidate_columns(candidate), **result.as_dict(), "state": "COMPLETE"}


def pruned_row(candidate: dict[str, Any], top1: float | None, seconds: float) -> dict[str, Any]:
    """The trials.csv row of a trial stopped early by the pruner."""
    return {**candidate_columns(candidate), "top1": top1, "seconds": seconds, "state": "PRUNED"}
