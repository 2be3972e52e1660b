"""The whole search, as the `scalesearch grid` command runs it (and users call it).

1. measure every (alpha, beta) of the grid with gamma fitted to the FLOPs target
   (search.candidates) and save the table before any training;
2. short-train the kept candidates with a backend, writing trials.csv and best.json
   atomically as each trial ends; a re-run resumes and skips finished candidates;
3. extrapolate the best (alpha, beta, gamma) to phi = 0..N (family.csv, Eq. 3);
4. draw the plots.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from .backends import BACKENDS, get_backend
from .cost import count_cost
from .errors import UserError
from .runs import (BEST, CANDIDATES, CONFIG, FAMILY, TRIAL_COLUMNS, TRIALS, SearchSettings, finished_trials,
                   open_run_dir, read_csv, write_csv, write_json)
from .search import Candidate, GridSpec, candidates, parse_budget
from .trial import dataset_for, search_base

CANDIDATE_COLUMNS = ["id", "alpha", "beta", "gamma", "d", "w", "r", "resolution", "nominal_ratio", "flops",
                     "flops_ratio", "params", "acts", "kept", "reason"]


@dataclass
class GridResult:
    out: Path
    candidates: list[dict[str, Any]]
    trials: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    family: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    resumed: bool = False
    skipped: int = 0


def default_out(base: str) -> Path:
    stem = Path(base).stem if base.endswith((".json", ".yaml", ".yml")) else base
    return Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def grid_spec(settings: SearchSettings) -> GridSpec:
    target = parse_budget(settings.target_flops, "--target-flops")
    if target.is_ratio and target.value < 1:
        raise UserError(f"--target-flops '{settings.target_flops}' is below 1x: phi = 1 scales the base up")
    return GridSpec(
        target_flops=target, alpha_max=settings.alpha_max, beta_max=settings.beta_max, step=settings.step,
        tolerance=settings.tolerance,
        max_params=parse_budget(settings.max_params, "--max-params") if settings.max_params else None,
        max_acts=parse_budget(settings.max_acts, "--max-acts") if settings.max_acts else None,
    )


def validate(settings: SearchSettings) -> GridSpec:
    """Every check that needs no data: fail before anything is created."""
    from .bases import get_base

    get_base(settings.base)
    spec = grid_spec(settings)
    if settings.backend not in BACKENDS:
        raise UserError(f"unknown backend '{settings.backend}'; valid backends: {', '.join(BACKENDS)}")
    if settings.address and settings.backend != "ray":
        raise UserError("--address joins a Ray cluster: use it with --backend ray")
    for name in ("epochs", "batch_size", "cpus_per_trial"):
        if getattr(settings, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0 (got {getattr(settings, name)})")
    for name in ("images", "train_subset", "val_subset", "max_trials", "resolution"):
        value = getattr(settings, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0 (got {value})")
    if settings.device not in ("auto", "cpu") and not settings.device.startswith("cuda"):
        raise UserError(f"--device '{settings.device}' must be auto, cpu or cuda[:N]")
    if settings.device.startswith("cuda") and settings.backend == "optuna":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {settings.device}: this machine has no CUDA device (use --device cpu or auto)")
    return spec


def _choose(kept: list[Candidate], max_trials: int | None, seed: int) -> list[Candidate]:
    if max_trials is None or max_trials >= len(kept):
        return kept
    picked = random.Random(seed).sample(kept, max_trials)
    return sorted(picked, key=lambda c: c.id)


def run_grid(settings: SearchSettings, *, dry_run: bool = False, echo: Callable[[str], None] = print,
             progress: bool = True) -> GridResult:
    from tqdm.auto import tqdm

    from .family import family
    from .formatting import table
    from .plots import plot_run

    spec = validate(settings)
    out = Path(settings.out) if settings.out else default_out(settings.base)
    settings.out = str(out)
    dataset = dataset_for(settings, progress=progress)      # dataset errors come before any file is written
    base = search_base(settings, dataset.num_classes)
    base_cost = count_cost(base)
    target = spec.target_flops.absolute(base_cost.flops)
    if target < base_cost.flops * (1 - spec.tolerance):
        raise UserError(f"--target-flops {settings.target_flops} ({target:,.0f}) is below the base's own "
                        f"{base_cost.flops:,} FLOPs at {base.resolution}px: phi = 1 scales the base up")
    resumed = (out / CONFIG).is_file()
    if resumed:
        open_run_dir(out, settings)  # refuses a different search before anything is touched
    saved = read_csv(out / CANDIDATES) if resumed else []
    if saved:
        rows = saved
    else:
        def bar(items):
            return tqdm(list(items), desc="measure candidates", unit="net", disable=None, leave=False)

        found = candidates(base, spec, progress=bar if progress else None)
        rows = [c.row() for c in found]
    kept = [Candidate(**{k: r[k] for k in Candidate.__dataclass_fields__}) for r in rows
            if str(r["kept"]).lower() in ("true", "1")]
    echo(f"{base.name} at {base.resolution}px: {base_cost.flops:,} FLOPs; target {spec.target_flops} = "
         f"{target:,.0f} +/- {spec.tolerance:.0%}; {len(rows)} (alpha, beta) points, {len(kept)} within tolerance")
    columns = [("id", ""), ("alpha", ".2f"), ("beta", ".2f"), ("gamma", ".3f"), "resolution",
               ("nominal_ratio", ".3f"), ("flops_ratio", ".3f"), ("params", ","), ("acts", ",")]
    kept_rows = [r for r in rows if str(r["kept"]).lower() in ("true", "1")]
    if kept_rows:
        echo(table(kept_rows, columns))
    echo(dropped_summary(rows) + (f" (every row, with its reason: {out / CANDIDATES})" if kept_rows else ""))
    if not kept:
        closest = min(rows, key=lambda r: abs(r["flops_ratio"] * base_cost.flops / target - 1))
        raise UserError(f"no candidate is within --tolerance {spec.tolerance:g} of the target "
                        f"(closest: alpha={closest['alpha']:g} beta={closest['beta']:g} at "
                        f"{closest['flops_ratio']:.2f}x); widen --tolerance, --alpha-max or --beta-max, or lower --step")
    if not resumed:
        open_run_dir(out, settings)
    write_json(out / CONFIG, {"settings": settings.as_dict(), "base_flops": base_cost.flops,
                              "base_params": base_cost.params, "target_flops_absolute": target,
                              "num_classes": dataset.num_classes, "dataset_name": dataset.name})
    if not saved:
        write_csv(out / CANDIDATES, rows, CANDIDATE_COLUMNS)
    result = GridResult(out=out, candidates=rows, resumed=resumed)
    if dry_run:
        result.files = [out / CONFIG, out / CANDIDATES]
        return result

    done = finished_trials(out)
    chosen = _choose(kept, settings.max_trials, settings.seed)
    todo = [c.row() for c in chosen if c.id not in done]
    result.skipped = len(chosen) - len(todo)
    if resumed:
        echo(f"resuming {out}: {result.skipped} finished trial(s) kept, {len(todo)} to train")
    trials: dict[int, dict[str, Any]] = {cid: row for cid, row in done.items()}
    lock = threading.Lock()

    def on_result(row: dict[str, Any]) -> None:
        with lock:  # Ray calls back from its own thread
            trials[int(row["candidate"])] = row
            ordered = [trials[k] for k in sorted(trials)]
            write_csv(out / TRIALS, ordered, TRIAL_COLUMNS)
            complete = [r for r in ordered if r.get("state") == "COMPLETE"]
            if complete:
                write_json(out / BEST, best_record(complete, settings))

    started = time.time()
    if todo:
        get_backend(settings.backend).run(todo, [c.id for c in chosen], settings, out, on_result)
    result.trials = [trials[k] for k in sorted(trials)]
    complete = [r for r in result.trials if r.get("state") == "COMPLETE"]
    if not complete:
        raise UserError(f"no trial completed in {out} (see {TRIALS}); nothing to extrapolate")
    result.best = best_record(complete, settings, seconds=time.time() - started)
    write_json(out / BEST, result.best)
    result.family = family(base, result.best["alpha"], result.best["beta"], result.best["gamma"], settings.phi_max)
    write_csv(out / FAMILY, result.family)
    result.files = [out / f for f in (CONFIG, CANDIDATES, TRIALS, BEST, FAMILY)] + plot_run(out)
    return result


def dropped_summary(rows: list[dict[str, Any]]) -> str:
    """One line counting the dropped grid points by kind of reason."""
    kinds = {"rounding twins": 0, "outside the FLOPs tolerance": 0, "over --max-params": 0, "over --max-acts": 0}
    for r in rows:
        reason = str(r.get("reason") or "")
        if reason.startswith("same network"):
            kinds["rounding twins"] += 1
        elif reason.startswith("flops"):
            kinds["outside the FLOPs tolerance"] += 1
        elif "--max-params" in reason:
            kinds["over --max-params"] += 1
        elif "--max-acts" in reason:
            kinds["over --max-acts"] += 1
    parts = [f"{n} {k}" for k, n in kinds.items() if n]
    return "dropped: " + (", ".join(parts) if parts else "none")


def best_record(complete: list[dict[str, Any]], settings: SearchSettings, seconds: float | None = None) -> dict[str, Any]:
    best = max(complete, key=lambda r: (r["top1"], -r["flops"]))
    record = {k: best[k] for k in ("alpha", "beta", "gamma", "d", "w", "r", "resolution", "top1", "loss",
                                   "params", "flops", "flops_ratio", "acts")}
    record.update(candidate=int(best["candidate"]), trials_complete=len(complete), settings=settings.as_dict())
    if seconds is not None:
        record["search_seconds"] = seconds
    return record
