"""Which kept candidates a search trains, and in what order (``order``, ``candidates``,
``max_trials``): pure functions of the candidate table."""

from __future__ import annotations

import math
import random

from ..errors import UserError
from ..settings import SearchSettings
from .space import Candidate


def choose(kept: list[Candidate], settings: SearchSettings, target_ratio: float) -> list[Candidate]:
    """The candidates to train: the given ids, else the first ``max_trials`` in ``order``.

    The order is a fixed permutation (seeded for ``random``), so raising ``max_trials``
    on an existing run extends its selection rather than drawing a new one.
    """
    if settings.candidates is not None:
        by_id = {c.id: c for c in kept}
        missing = [i for i in settings.candidates if i not in by_id]
        if missing:
            raise UserError(f"setting candidates: {missing[0]} is not a kept candidate of this grid "
                            f"(kept: {', '.join(str(c.id) for c in kept[:20])}{' ...' if len(kept) > 20 else ''})")
        return [by_id[i] for i in dict.fromkeys(settings.candidates)]
    if settings.order == "nearest":
        ordered = sorted(kept, key=lambda c: (abs(c.flops_ratio - target_ratio), c.id))
    elif settings.order == "spread":
        ordered = spread_order(kept)
    elif settings.order == "id":
        ordered = sorted(kept, key=lambda c: c.id)
    else:
        ordered = list(kept)
        random.Random(settings.seed).shuffle(ordered)
    return ordered[:settings.max_trials] if settings.max_trials else ordered


def spread_order(kept: list[Candidate]) -> list[Candidate]:
    """Farthest-point order in (log alpha, log beta, log gamma): each next candidate is the one
    farthest from all taken so far, starting from the one farthest from the grid's centre.

    A few trials so span the grid's corners (depth-, width- and resolution-heavy shapes)
    before they fill in between; ties go to the lower id, so the order is fixed.
    """
    if not kept:
        return []
    points = [(math.log(c.alpha), math.log(c.beta), math.log(c.gamma)) for c in kept]
    centre = [sum(axis) / len(points) for axis in zip(*points)]
    first = max(range(len(kept)), key=lambda i: (math.dist(points[i], centre), -kept[i].id))
    ordered, left = [first], set(range(len(kept))) - {first}
    far = [math.dist(p, points[first]) for p in points]  # to the nearest candidate taken
    while left:
        pick = max(left, key=lambda i: (far[i], -kept[i].id))
        ordered.append(pick)
        left.discard(pick)
        far = [min(f, math.dist(p, points[pick])) for f, p in zip(far, points)]
    return [kept[i] for i in ordered]
