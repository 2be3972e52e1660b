"""Successive halving over training budgets: `grid --fidelity halving`.

Rung 0 trains every chosen candidate with every seed at the search's budget b (its epochs or
images); each later rung k trains the best 1/eta of the rung below, by mean top-1 over seeds,
at eta^k x b, up to ``rungs`` rungs.  A rung keeps at least two candidates, so that its top
still compares a best with a runner-up, and a candidate that diverged at a rung never goes up.
The final ranking is the top rung's (``study.summarize`` ranks a candidate by its highest
rung), and for every two rungs the candidates trained at both give the rank agreement of the
smaller budget with the larger (``agreement``): the question a short-training proxy raises,
asked inside the search itself.

Rungs are one more producer of trials: each is a study of its own trials (ids "c7-s0-r1"),
run by the same backend into the same trials.csv, so a killed run resumes mid-rung like any
other, and the promotions are recomputed from the rows already written.  Pure functions of
settings and rows, apart from ``run_rungs``, which drives the backend.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from .agreement import agreement
from .ranking import summarize
from ..study.rows import COMPLETE, TrialRow, TrialSpec


@dataclass(frozen=True)
class Rung:
    """One rung: its budget (training images per trial) and its candidates, planned or trained."""

    rung: int
    images: int
    candidates: int
    seeds: int
    kept: tuple[int, ...] = ()        # the candidates it sent up a rung (once it ran)

    @property
    def trials(self) -> int:
        return self.candidates * self.seeds

    @property
    def training_images(self) -> int:
        return self.trials * self.images


def rung_recipe(recipe: Any, rung: int, eta: int) -> Any:
    """The training recipe of ``rung``: ``recipe``'s budget (images, else epochs) times eta^rung."""
    factor = eta ** rung
    if recipe.images is not None:
        return recipe.replace(images=recipe.images * factor)
    return recipe.replace(epochs=recipe.epochs * factor)


def rung_images(settings: Any, rung: int, n_train: int) -> int:
    """Training images per trial at ``rung`` of a search with ``settings`` on ``n_train`` images."""
    from ..train.recipe import planned_steps

    steps, batch = planned_steps(rung_recipe(settings.train, rung, settings.eta), n_train)
    return steps * batch


def survivors(ranked: int, eta: int) -> int:
    """How many of ``ranked`` candidates go up a rung: the top 1/eta, rounded up, at least two
    (none when fewer than two are ranked: then there is nothing to compare at a larger budget)."""
    if ranked < 2:
        return 0
    return min(ranked, max(2, math.ceil(ranked / eta)))


def plan(candidates: int, seeds: int, images: Sequence[int], eta: int) -> list[Rung]:
    """The rungs a search of ``candidates`` x ``seeds`` will train if every trial is healthy;
    ``images[k]`` is rung k's training images per trial (whole batches, so not always eta^k b)."""
    out, n = [], candidates
    for k, per_trial in enumerate(images):
        if k and n < 2:
            break
        out.append(Rung(k, per_trial, n, seeds))
        n = survivors(n, eta)
    return out


def plan_text(rungs: Sequence[Rung], eta: int) -> str:
    """One line: what each rung trains, and the images against every candidate at the top budget."""
    parts = [f"rung 0 trains {rungs[0].candidates} candidate(s) x {rungs[0].seeds} seed(s) at "
             f"{rungs[0].images:,} images"]
    parts += [f"rung {r.rung} the top {r.candidates} at {r.images:,}" for r in rungs[1:]]
    spent = sum(r.training_images for r in rungs)
    full = rungs[0].trials * rungs[-1].images
    text = (f"successive halving (eta {eta}): " + ", ".join(parts) + f": {spent:,} training images in all, "
            f"{spent / full:.0%} of the {full:,} that every candidate at the top budget would take")
    if spent >= full:  # a rung keeps at least two: with few candidates nothing is halved
        text += (f"\nwarning: with {rungs[0].candidates} candidate(s) halving saves nothing (a rung keeps at least "
                 f"two); --fidelity full --images {rungs[-1].images} trains each once at the top budget for less")
    return text


def promoted(rows: Sequence[TrialRow], eta: int) -> list[int]:
    """The candidates a finished rung sends up: the top ``survivors`` by mean top-1 over seeds."""
    ranked = [s for s in summarize(rows) if s.ranked]
    return [s.candidate for s in ranked[:survivors(len(ranked), eta)]]


def current(rows: Iterable[TrialRow], eta: int) -> list[TrialRow]:
    """The rows of a halving run as its rungs stand now: a rung's rows count only for the
    candidates that the rung below promotes from its rows.  Raising --max-trials re-ranks rung 0
    and can promote others than before; the rows of a candidate no longer promoted stay in
    trials.csv (nothing is deleted) but no longer rank or plot as that rung's."""
    by_rung: dict[int, list[TrialRow]] = {}
    for row in rows:
        by_rung.setdefault(row.rung, []).append(row)
    out = list(by_rung.get(0, []))
    below = out
    for k in sorted(r for r in by_rung if r > 0):
        kept = set(promoted(below, eta))
        below = [r for r in by_rung[k] if r.candidate in kept]
        out += below
    return out


def standing(rows: Iterable[TrialRow], config: dict[str, Any]) -> list[TrialRow]:
    """A run folder's rows as a reader counts them: the rows of the run's plan, the seeds
    seed..seed+seeds-1 and its rungs, as config.json records them (a row of another seed or rung,
    left by a run given more seeds once or written by hand, stays in the file and counts in no
    result, as a resume leaves it), then as its rungs stand (``current``, with the eta config.json
    records: 3, the default, for one written before); a run without rungs, as they are."""
    from ..settings import flatten

    recorded = flatten(config.get("settings") or {})
    seed, seeds, rungs = recorded.get("seed"), recorded.get("seeds"), recorded.get("rungs")
    rows = list(rows)
    if isinstance(seed, int) and isinstance(seeds, int):
        rows = [r for r in rows if seed <= r.seed < seed + seeds]
    if recorded.get("fidelity") in ("full", "halving"):
        top = rungs if recorded["fidelity"] == "halving" and isinstance(rungs, int) else 1
        rows = [r for r in rows if r.rung < top]
    if not any(r.rung for r in rows):
        return rows
    eta = recorded.get("eta")
    return current(rows, eta if isinstance(eta, int) and eta >= 2 else 3)


def up(trial: TrialSpec, rung: int, eta: int, images: int) -> TrialSpec:
    """``trial`` (a rung-0 trial) at ``rung``: its budget times eta^rung."""
    return dataclasses.replace(trial, rung=rung, recipe=rung_recipe(trial.recipe, rung, eta), images=images)


Study = Callable[[list[TrialSpec], list[TrialRow]], list[TrialRow]]


def run_rungs(trials: Sequence[TrialSpec], images: Sequence[int], eta: int,
              study: Study) -> tuple[list[TrialRow], list[Rung]]:
    """Run the rungs: ``study(rung_trials, rows_below)`` trains a rung's trials not yet finished
    and returns their rows (``rows_below``: every row of the rungs below, for the ranking written
    as trials end).  Returns every row and the rungs as trained."""
    rows: list[TrialRow] = []
    rungs: list[Rung] = []
    current = list(trials)
    seeds = len({t.seed for t in trials})
    for k, per_trial in enumerate(images):
        found = study(current, list(rows))
        rows += found
        kept = promoted(found, eta) if k + 1 < len(images) else []
        rungs.append(Rung(k, per_trial, len({t.candidate for t in current}), seeds, tuple(kept)))
        if not kept:
            break
        current = [up(t, k + 1, eta, images[k + 1]) for t in trials if t.candidate in kept]
    return rows, rungs


def rung_agreements(rows: Sequence[TrialRow], rungs: Sequence[Rung], seed: int = 0) -> list[dict[str, Any]]:
    """For each two rungs in a row, the rank agreement of the lower one's budget with the higher
    one's over the candidates trained at both (healthy rows only), as ``Agreement.as_dict`` plus
    the two rungs and ``candidates``: each one's top-1 per seed at both (for the plot)."""
    scores: dict[int, dict[int, list[float]]] = {}
    for row in rows:
        if row.state == COMPLETE and row.top1 is not None:
            scores.setdefault(row.rung, {}).setdefault(row.candidate, []).append(row.top1)
    out = []
    for low, high in zip(rungs, rungs[1:]):
        upper = scores.get(high.rung, {})
        lower = {c: v for c, v in scores.get(low.rung, {}).items() if c in upper}
        found = agreement(lower, upper, f"{low.images:,}-image", f"{high.images:,}-image", seed=seed)
        points = [dict(candidate=c, small=lower[c], large=upper[c]) for c in lower]
        out.append(dict(found.as_dict(), rung=low.rung, next_rung=high.rung, candidates=points))
    return out
