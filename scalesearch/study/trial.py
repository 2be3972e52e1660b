"""One trial: build a scaled spec and short-train it from scratch with one seed.

A plain function of plain data, so every backend runs the same code: in-process for
Optuna, in a worker process (on any node of a cluster) for Ray Tune.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

from ..train.forms import QUICK_FLOPS
from ..train.machine import resolve_device
from .rows import COMPLETE, TrialContext, TrialRow, TrialSpec

Report = Callable[[int, float], None]


@functools.lru_cache(maxsize=2)
def load_dataset(data: Any, seed: int, progress: bool = False):
    """The study's data set, opened once per process (an image folder from its on-disk store).

    ``data`` is a (frozen, hashable) ``settings.DataSettings``; ``seed`` picks the subsets.
    """
    from ..data import open_dataset

    return open_dataset(data.dataset, cache_dir=data.cache_dir, train_subset=data.train_subset,
                        val_subset=data.val_subset, seed=seed, progress=progress,
                        store_resolution=data.store_resolution)


def execute(trial: TrialSpec, context: TrialContext, data_seed: int, backend: str,
            report: Report | None = None) -> TrialRow:
    """Train one trial and return its row (COMPLETE, or DIVERGED with the reason)."""
    import torch

    from ..train.loop import build_model, train_candidate

    dataset = load_dataset(context.data, data_seed)
    config = dataclasses.replace(trial.recipe, seed=trial.seed, device=resolve_device(context.device),
                                 threads=context.threads)
    torch.manual_seed(trial.seed)  # initialisation, then train_candidate seeds the data order
    model = build_model(trial.spec, trial.recipe)
    desc = (f"trial {trial.id}" + (f" a={trial.alpha:g} b={trial.beta:g} g={trial.gamma:.3f}"
                                   if trial.alpha is not None else "") + f" {trial.spec.resolution}px")
    result = train_candidate(model, dataset, trial.spec.resolution, config, report=report,
                             progress=context.progress, desc=desc)
    return TrialRow.of(trial, COMPLETE, backend, result)




def estimate_seconds(trials: Sequence[TrialSpec], context: TrialContext, data_seed: int,
                     steps: int = 3, batch: int | None = None, quick: bool = False) -> float:
    """Seconds to train ``trials``, from a few timed steps of the cheapest and dearest network.

    The steps are the trainer's own (``train.seconds_per_image``: the form ``step_form``
    picks, the recipe's optimizer and clip, the trial's device and threads), at the recipe's
    batch or at ``batch``; ``quick`` (a dry run) times one step of the recipe's batch cut to
    QUICK_FLOPS, at least 8 images: seconds where a large network's batch at a large
    resolution would take minutes, and a small network still timed on a typical batch; it times
    the cheapest network alone and takes time per image in proportion to FLOPs from it.
    Otherwise time per image is taken as linear in FLOPs between the two measured networks; each
    evaluation (after every ``eval_every`` epochs and at the end) adds the held-out split and
    the batch-norm recalibration images at a third of a training image each (a forward pass).
    """
    import math

    import torch

    from ..train.loop import build_model, seconds_per_image

    from ..train.recipe import planned_steps

    if not trials:
        return 0.0
    dataset = load_dataset(context.data, data_seed)
    device = resolve_device(context.device)
    cheapest, dearest = min(trials, key=lambda t: t.flops), max(trials, key=lambda t: t.flops)
    # A dry run times the cheapest network alone and scales its time per image by FLOPs: the
    # dearest may take minutes to build and step (a depth of 1000 did), and nothing trains yet.
    ends = [cheapest] if quick or cheapest.spec == dearest.spec else [cheapest, dearest]
    per_image = []
    for trial in ends:
        config = dataclasses.replace(trial.recipe, device=device, threads=context.threads)
        with torch.random.fork_rng():  # the caller's random state is left as it was
            model = build_model(trial.spec, trial.recipe)
        timed = batch or planned_steps(trial.recipe, dataset.n_train)[1]
        if quick:
            timed = min(timed, max(8, int(QUICK_FLOPS // max(trial.flops, 1))))
        per_image.append((trial.flops, seconds_per_image(model, trial.spec.resolution, config, timed,
                                                         trial.spec.num_classes, 1 if quick else steps)))
    (f0, t0), (f1, t1) = per_image[0], per_image[-1]
    if quick and f0 > 0:  # the cheapest alone: time per image in proportion to FLOPs
        t0, f0, slope = 0.0, 0, t0 / f0
    else:  # linear between the two ends (flat when only one was timed)
        slope = (t1 - t0) / (f1 - f0) if f1 != f0 else 0.0
    seconds = 0.0
    for trial in trials:
        recipe = trial.recipe
        total, batch_size = planned_steps(recipe, dataset.n_train)
        epochs = total * batch_size / dataset.n_train
        evaluations = 1 + (math.ceil(epochs) - 1) // recipe.eval_every if recipe.eval_every else 1
        recalibration = min(recipe.bn_recalibration, dataset.n_train)
        images = total * batch_size + evaluations * (dataset.n_val + recalibration) / 3
        seconds += images * max(t0 + slope * (trial.flops - f0), 0.0)
    return seconds
