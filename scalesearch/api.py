"""The Python API behind the CLI: each function is what one command does, minus printing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .net.bases import get_base
from .errors import UserError, checked_arguments, require
from .net.scaling import DEFAULT_ROUNDING, Rounding, check_factors, compound, scale
from .net.spec import NetworkSpec


def resolve(base: str | Path | NetworkSpec, function: str = "measure") -> NetworkSpec:
    require(isinstance(base, (NetworkSpec, str, Path)), function, "base", base, "a NetworkSpec, a base name or a spec file")
    return base if isinstance(base, NetworkSpec) else get_base(str(base))


def _path(value: Any, function: str, argument: str, what: str) -> Path:
    require(isinstance(value, (str, Path)), function, argument, value, what)
    return Path(value)


@checked_arguments
def measure(base: str | Path | NetworkSpec, d: float = 1.0, w: float = 1.0, r: float = 1.0,
            rounding: Rounding = DEFAULT_ROUNDING, *, resolution: int | None = None,
            keep_maps: bool = False, latency: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Scale a base by (d, w, r) and measure it: what `scalesearch flops --json` prints.

    ``resolution`` measures the base at a proxy resolution first; ``keep_maps`` then adapts
    its early strides to keep the native last feature map (proxy.py); ``latency`` adds the
    forward latency at batch 1 on ``device`` (measure/latency.py)."""
    from .measure.cost import count_cost
    from .net.proxy import keep_maps as adapt, last_map

    check_factors(d, w, r)
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or not 8 <= resolution <= 4096):
        raise UserError(f"resolution must be an integer from 8 to 4096 (got {resolution!r})")
    if keep_maps and resolution is None:
        raise UserError("keep_maps (--keep-maps) adapts a base to a proxy resolution: give a resolution "
                        "(--resolution) too")
    spec = resolve(base)
    geometry = ""
    if keep_maps:
        spec, found = adapt(spec, resolution)
        geometry = found.text
    elif resolution is not None:
        spec = spec.replace(resolution=resolution)
    net = scale(spec, d, w, r, rounding)
    cost = count_cost(net)
    out = dict(base=spec.name, name=net.name, d=d, w=w, r=r, resolution=net.resolution,
               layers=net.total_layers, last_map=last_map(net), **cost.as_dict(), stages=net.stage_table())
    if geometry:
        out["geometry"] = geometry
    if latency:
        from .measure.latency import measure_latency

        require(isinstance(device, str) and (device == "cpu" or device.startswith("cuda")), "measure", "device",
                device, "cpu or cuda[:N]")
        out["latency"] = measure_latency(net, device=device).as_dict()
    return out


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def member_spec(run_dir: str | Path, phi: int) -> NetworkSpec:
    """The spec of family member ``phi`` of a finished grid run (as family.csv lists it)."""
    from .search.grid import family_base
    from .settings import load_settings
    from .study.rundir import CONFIG, FAMILY, RunDir, read_csv

    run = Path(run_dir)
    if not _is_run(run):
        raise UserError(f"'{run}' is not a scalesearch run directory (no config.json)")
    config = RunDir(run).open_to_read((CONFIG, FAMILY))
    rows = read_csv(run / FAMILY)
    if not rows:
        raise UserError(f"'{run}' has no {FAMILY} yet: the search has not finished")
    again = "re-run the search's command to write it again (finished trials are not trained again)"
    members: dict[int, dict] = {}
    for row in rows:
        member = _family_member(row)
        if member is None:
            raise UserError(f"'{run / FAMILY}' is damaged (a row without a whole phi, a positive d and w and a "
                            f"whole resolution in pixels: {_shown_row(row)}); {again}") from None
        if member["phi"] in members:
            raise UserError(f"'{run / FAMILY}' is damaged (phi {member['phi']} is listed twice); {again}")
        members[member["phi"]] = member
    if phi not in members:
        raise UserError(f"phi {phi} is not in {run / FAMILY} (it lists phi = 0..{max(members)})")
    chosen = members[phi]
    d, w, resolution = chosen["d"], chosen["w"], chosen["resolution"]
    settings = load_settings(run / CONFIG)
    num_classes = config.get("num_classes")
    base = family_base(settings, int(num_classes) if num_classes else get_base(settings.base).num_classes)
    spec = scale(base, d, w, 1.0, settings.rounding)
    spec = spec.replace(resolution=resolution, name=f"{base.name}-phi{phi}", scale=(d, w, resolution / base.resolution))
    if chosen["params"] is not None:
        from .measure.cost import count_cost

        params = count_cost(spec).params
        if params != chosen["params"]:
            raise UserError(f"{run / CONFIG} and {run / FAMILY} disagree: phi {phi} of family.csv has "
                            f"{chosen['params']:,} params, the base config.json names ({settings.base}) scaled by "
                            f"d={d:g}, w={w:g} has {params:,}; restore the run's config.json")
    return spec


def _family_member(row: dict) -> dict | None:
    """phi, d, w, resolution and params of a family.csv row, or None where one is not what a run writes."""
    import math

    def whole(value: object) -> int | None:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return int(number) if math.isfinite(number) and number == int(number) else None

    try:
        d, w = float(row["d"]), float(row["w"])
    except (KeyError, TypeError, ValueError):
        return None
    phi, resolution = whole(row.get("phi")), whole(row.get("resolution"))
    params = whole(row.get("params")) if row.get("params") is not None else None
    if phi is None or phi < 0 or resolution is None or resolution <= 0 or not (math.isfinite(d) and d > 0
                                                                                 and math.isfinite(w) and w > 0):
        return None
    return dict(phi=phi, d=d, w=w, resolution=resolution, params=params)


def _shown_row(row: dict) -> str:
    return ", ".join(f"{k}={row.get(k)!r}" for k in ("phi", "d", "w", "resolution"))


@checked_arguments
def create_model(source: str | Path | NetworkSpec, phi: int = 0, alpha: float | None = None,
                 beta: float | None = None, gamma: float | None = None):  # noqa: ANN201 - torch.nn.Module
    """The ``nn.Module`` of a family member, freshly initialised, for your own training pipeline.

    ``source`` is a finished run directory (member ``phi`` of its family.csv), or a base
    name / spec file / spec, scaled by Eq. 3 with the given ``alpha, beta, gamma`` and ``phi``.
    """
    from .measure.models import build

    require(isinstance(source, (NetworkSpec, str, Path)), "create_model", "source", source,
            "a run directory, a base name, a spec file or a NetworkSpec")
    require(isinstance(phi, int) and not isinstance(phi, bool) and phi >= 0, "create_model", "phi", phi,
            "a whole number >= 0")
    if not isinstance(source, NetworkSpec) and _is_run(Path(source)):
        return build(member_spec(source, phi))
    spec = resolve(source, "create_model")
    if phi:
        if alpha is None or beta is None or gamma is None:
            raise UserError("create_model: phi > 0 on a base needs alpha, beta and gamma (or pass a run directory)")
        spec = scale(spec, *compound(alpha, beta, gamma, phi))
    return build(spec)


UNTRAINED = ("untrained: freshly initialised weights of the member's architecture (a search trains "
             "short proxies at phi = 1 and keeps no weights); train it in your own pipeline")


@checked_arguments
def export_member(run_dir: str | Path, phi: int, out: str | Path, num_classes: int | None = None,
                  in_channels: int | None = None) -> list[Path]:
    """Write family member ``phi`` of a run: spec.yaml, model.pt (an untrained state_dict)
    and meta.json (its cost, and what its weights are).  ``num_classes`` sets the classifier
    and ``in_channels`` the image channels the stem takes (1 for grayscale, 4 for RGB and
    near-infrared...) for your own data (defaults: the searched data set's, and 3)."""
    import torch

    from .measure.cost import count_cost
    from .measure.models import build
    from .net.spec import save_spec
    from .study.rundir import writable_problem

    _path(run_dir, "export_member", "run_dir", "a finished run directory")
    out = _path(out, "export_member", "out", "a folder path")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out '{out}' exists and is not an empty folder; choose another --out")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = writable_problem(existing) if existing.is_dir() else f"'{existing}' is a file"
    if problem:
        raise UserError(f"--out '{out}' cannot be created ({problem}); choose another --out")
    spec = member_spec(run_dir, phi)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= 1_000_000:
            raise UserError(f"--num-classes must be a whole number from 1 to 1,000,000 (got {num_classes!r})")
        spec = spec.replace(num_classes=num_classes)
    if in_channels is not None:
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or not 1 <= in_channels <= 1_024:
            raise UserError(f"--in-channels must be a whole number from 1 to 1,024 (got {in_channels!r})")
        spec = spec.replace(in_channels=in_channels)
    model = build(spec)
    cost = count_cost(spec)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "spec.yaml", out / "model.pt", out / "meta.json"]
    save_spec(spec, files[0])
    torch.save(model.state_dict(), files[1])
    files[2].write_text(json.dumps(dict(run=str(run_dir), phi=phi, resolution=spec.resolution,
                                        **cost.as_dict(), weights=UNTRAINED,
                                        load="scalesearch.load_model(FOLDER)"), indent=2) + "\n")
    return files


@checked_arguments
def load_model(folder: str | Path):  # noqa: ANN201 - torch.nn.Module
    """Rebuild an exported member from its spec.yaml and load its model.pt."""
    import pickle

    import torch

    from .measure.models import build
    from .net.spec import load_spec

    folder = _path(folder, "load_model", "folder", "the folder `scalesearch export` wrote")
    for name in ("spec.yaml", "model.pt"):
        if not (folder / name).is_file():
            raise UserError(f"'{folder}' is not an exported member: it has no {name} (see `scalesearch export`)")
    model = build(load_spec(folder / "spec.yaml"))
    try:
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, TypeError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"'{folder / 'model.pt'}' does not hold the weights of the network in its spec.yaml "
                        f"({first:.160}); export the member again") from None
    return model


@checked_arguments
def reproduce(experiment: str | Path, budget: str = "smoke", *, dry_run: bool = False, progress: bool = True,
              estimate: bool = True, **options: Any):  # noqa: ANN201 - reproduce.ReproduceResult
    """What `scalesearch reproduce` does: ``experiment`` is table3, figure8 or an experiment file;
    ``options`` are ``reproduce.make_settings``'s (dataset, seeds, out, recipe, keep_maps,
    backend, ...).  Returns the result (models, rows, verdicts, files written)."""
    from .reproduce import make_settings, reproduce as run  # the module (the package's name is this function)

    _path(experiment, "reproduce", "experiment", "table3, figure8 or an experiment file's path")

    try:
        settings = make_settings(experiment, budget, **options)
    except UserError as exc:  # an unknown option is this function's
        raise UserError(str(exc).replace("make_settings()", "reproduce()", 1)) from None
    return run(settings, dry_run=dry_run, progress=progress, estimate=estimate)


def _budget_name(recipe: Any) -> str:
    if recipe.images is not None:
        return f"{recipe.images:,} images"
    return f"{recipe.epochs:g} epoch{'' if recipe.epochs == 1 else 's'}"


@checked_arguments
def check_proxy(run_dir: str | Path, budget: str | float = "4x", top: int = 4, *, progress: bool = True,
                estimate: bool = True, backend: Any = None, on_event: Any = None) -> dict[str, Any]:
    """Ask a finished search whether its proxy ranks like a bigger budget: train its ``top``
    ranked candidates again at ``budget`` times the run's budget (epochs or images), same
    seeds and data, in RUN/check-proxy-<budget>/, and measure the rank agreement of the two
    (agreement.py).  Returns what agreement.json holds."""
    from .search.agreement import agreement
    from .train.forms import recorded_forms
    from .search.grid import run_grid
    from .search.budget import parse_budget
    from .report.plots import draw_agreement
    from .settings import load_settings
    from .search.ranking import summarize
    from .study.rows import TRIALS
    from .study.rundir import CANDIDATES, CONFIG, RunDir

    run = RunDir(_path(run_dir, "check_proxy", "run_dir", "a finished run directory"))
    if not run.exists:
        raise UserError(f"'{run.path}' is not a scalesearch run directory (no config.json)")
    if isinstance(top, bool) or not isinstance(top, int) or top < 2:
        raise UserError(f"--top must be a whole number of at least 2 candidates (got {top!r})")
    factor = parse_budget(budget, "--budget")
    if not factor.is_ratio or factor.value <= 1:
        raise UserError(f"--budget '{budget}' must be a multiple of the run's budget above 1, such as 4x")
    run.open_to_read((CONFIG, CANDIDATES, TRIALS))
    settings = load_settings(run / CONFIG)
    # The run's own budget: under successive halving, its rung 0 (every candidate at that budget).
    ranked = [s for s in summarize(r for r in run.trials().values() if r.rung == 0) if s.ranked][:top]
    if len(ranked) < 2:
        raise UserError(f"'{run.path}' has {len(ranked)} healthily trained candidate(s): a ranking needs 2 or more")
    recipe = settings.train
    bigger = (recipe.replace(images=int(round(recipe.images * factor.value))) if recipe.images is not None
              else recipe.replace(epochs=recipe.epochs * factor.value))
    # The larger budget trains in the run's own step form, so the two budgets differ in nothing else.
    forms = recorded_forms(run.read_config(), list(run.finished().values()))
    form = forms.get(settings.base) or (next(iter(forms.values())) if len(forms) == 1 else None)
    if form is not None:
        bigger = bigger.replace(precision=form.precision, layout=form.layout)
    out = run.path / f"check-proxy-{factor.value:g}x"
    checked = settings.replace(train=bigger, candidates=tuple(s.candidate for s in ranked), max_trials=None,
                               out=str(out), fidelity="full")  # every candidate at the larger budget
    try:
        result = run_grid(checked, backend=backend, progress=progress, estimate=estimate, on_event=on_event)
    except UserError as exc:  # grid's advice names --out, which check-proxy has not: name its folder
        raise UserError(_as_check_proxy(str(exc), out)) from None
    small = {s.candidate: [r.top1 for r in s.rows if r.top1 is not None] for s in ranked}
    large = {s.candidate: [r.top1 for r in s.rows if r.top1 is not None] for s in result.summaries if s.ranked}
    found = agreement(small, large, _budget_name(recipe), _budget_name(bigger), seed=settings.seed)
    points = [dict(candidate=c, small=small[c], large=large.get(c, [])) for c in small]
    record = dict(found.as_dict(), run=str(run.path), check=str(out), budget=f"{factor.value:g}x",
                  candidates=points)
    check = RunDir(out)
    check.write_run_json("agreement.json", record)
    record["files"] = [str(out / "agreement.json")] + [str(p) for p in draw_agreement(
        points, out / "agreement", found.small, found.large, found.verdict)]
    return record


def _as_check_proxy(message: str, folder: Path) -> str:
    """A refusal of check-proxy's inner grid run in check-proxy's own words: its folder, not --out."""
    return (message.replace(f"--out '{folder}'", f"check-proxy's folder '{folder}'")
            .replace("or choose another --out", f"or move '{folder}' away to check again")
            .replace("choose another --out", f"move '{folder}' away to check again"))
