"""Whether a finished short run is healthy: a non-finite or exploding loss, or a top-1 at chance."""

from __future__ import annotations

import math


LOSS_GROWTH = 10.0  # a held-out loss this many times its start means the run blew up
CHANCE_SIGMAS = 2.0  # binomial standard errors above chance that a top-1 must clear
PLATEAU = 0.95  # a final training loss above this fraction of ln(classes): never started to learn
NEVER_LEARNED = "it never started to learn"   # how a divergence reason says so


def chance_threshold(num_classes: int, n_val: int) -> float:
    """The top-1 a run must exceed to count as having learned anything.

    Chance p = 1 / num_classes plus ``CHANCE_SIGMAS`` binomial standard errors of a
    held-out count of ``n_val``: sqrt(p (1 - p) / n_val).  A guesser clears it only about
    2% of the time (normal approximation).
    """
    if num_classes < 2 or n_val < 1:
        raise ValueError(f"need >= 2 classes and >= 1 held-out image (got {num_classes}, {n_val})")
    p = 1 / num_classes
    return p + CHANCE_SIGMAS * math.sqrt(p * (1 - p) / n_val)


def divergence(top1: float, loss: float, train_loss: float, num_classes: int, n_val: int) -> str:
    """Why a finished run is not healthy, or "" when it is.

    In order: a non-finite training or held-out loss (or top-1); a held-out cross-entropy
    above ``LOSS_GROWTH`` times its start, ln(num_classes), the loss of a uniform guess;
    a top-1 not above ``chance_threshold`` (chance plus two binomial standard errors),
    which names the plateau when the training loss too stayed near ln(num_classes).
    """
    if not math.isfinite(train_loss):
        return "non-finite training loss"
    if not (math.isfinite(loss) and math.isfinite(top1)):
        return "non-finite held-out loss"
    if num_classes < 2:  # nothing to learn, nothing to compare with
        return ""
    start = math.log(num_classes)
    if loss > LOSS_GROWTH * start:
        return f"held-out loss {loss:,.4g} is {loss / start:,.0f}x its start ln({num_classes}) = {start:.2f}"
    threshold = chance_threshold(num_classes, n_val)
    if top1 <= threshold:
        why = (f"top-1 {top1:.1%} is at chance (1/{num_classes} = {1 / num_classes:.1%}, {n_val} images; "
               f"needs > {threshold:.1%})")
        if train_loss >= PLATEAU * start:
            why += (f"; its training loss {train_loss:.3f} never left ln({num_classes}) = {start:.2f}, "
                    f"a uniform guess: {NEVER_LEARNED} (too few steps for this network?)")
        return why
    return ""
