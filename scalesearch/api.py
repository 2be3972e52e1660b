"""The Python API behind the CLI: each function is what one command does, minus printing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .bases import get_base
from .errors import UserError
from .scaling import DEFAULT_ROUNDING, Rounding, check_factors, compound, scale
from .spec import NetworkSpec


def resolve(base: str | Path | NetworkSpec) -> NetworkSpec:
    return base if isinstance(base, NetworkSpec) else get_base(str(base))


def measure(base: str | Path | NetworkSpec, d: float = 1.0, w: float = 1.0, r: float = 1.0,
            rounding: Rounding = DEFAULT_ROUNDING) -> dict[str, Any]:
    """Scale a base by (d, w, r) and measure it: what `scalesearch flops --json` prints."""
    from .cost import count_cost

    check_factors(d, w, r)
    spec = resolve(base)
    net = scale(spec, d, w, r, rounding)
    cost = count_cost(net)
    return dict(base=spec.name, name=net.name, d=d, w=w, r=r, resolution=net.resolution,
                layers=net.total_layers, **cost.as_dict(), stages=net.stage_table())


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def member_spec(run_dir: str | Path, phi: int) -> NetworkSpec:
    """The spec of family member ``phi`` of a finished grid run (as family.csv lists it)."""
    from .grid import search_base
    from .settings import load_settings
    from .study import FAMILY, read_csv

    run = Path(run_dir)
    if not _is_run(run):
        raise UserError(f"'{run}' is not a scalesearch run directory (no config.json)")
    rows = read_csv(run / FAMILY)
    if not rows:
        raise UserError(f"'{run}' has no {FAMILY} yet: the search has not finished")
    row = next((r for r in rows if int(r["phi"]) == phi), None)
    if row is None:
        raise UserError(f"phi {phi} is not in {run / FAMILY} (it lists phi = 0..{max(int(r['phi']) for r in rows)})")
    settings = load_settings(run / "config.json")
    num_classes = json.loads((run / "config.json").read_text()).get("num_classes")
    base = search_base(settings, int(num_classes) if num_classes else get_base(settings.base).num_classes)
    spec = scale(base, float(row["d"]), float(row["w"]), 1.0, settings.rounding)
    spec = spec.replace(resolution=int(row["resolution"]), name=f"{base.name}-phi{phi}",
                        scale=(float(row["d"]), float(row["w"]), int(row["resolution"]) / base.resolution))
    return spec


def create_model(source: str | Path | NetworkSpec, phi: int = 0, alpha: float | None = None,
                 beta: float | None = None, gamma: float | None = None):  # noqa: ANN201 - torch.nn.Module
    """The ``nn.Module`` of a family member, freshly initialised, for your own training pipeline.

    ``source`` is a finished run directory (member ``phi`` of its family.csv), or a base
    name / spec file / spec, scaled by Eq. 3 with the given ``alpha, beta, gamma`` and ``phi``.
    """
    from .models import build

    if not isinstance(source, NetworkSpec) and _is_run(Path(source)):
        return build(member_spec(source, phi))
    spec = resolve(source)
    if phi:
        if alpha is None or beta is None or gamma is None:
            raise UserError("create_model: phi > 0 on a base needs alpha, beta and gamma (or pass a run directory)")
        spec = scale(spec, *compound(alpha, beta, gamma, phi))
    return build(spec)


def export_member(run_dir: str | Path, phi: int, out: str | Path) -> list[Path]:
    """Write family member ``phi`` of a run: spec.yaml, model.pt (state_dict) and meta.json."""
    import torch

    from .cost import count_cost
    from .models import build
    from .spec import save_spec

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out '{out}' exists and is not an empty folder; choose another --out")
    spec = member_spec(run_dir, phi)
    model = build(spec)
    cost = count_cost(spec)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "spec.yaml", out / "model.pt", out / "meta.json"]
    save_spec(spec, files[0])
    torch.save(model.state_dict(), files[1])
    files[2].write_text(json.dumps(dict(run=str(run_dir), phi=phi, resolution=spec.resolution,
                                        **cost.as_dict(), load="scalesearch.load_model(FOLDER)"), indent=2) + "\n")
    return files


def load_model(folder: str | Path):  # noqa: ANN201 - torch.nn.Module
    """Rebuild an exported member from its spec.yaml and load its model.pt."""
    import torch

    from .models import build
    from .spec import load_spec

    folder = Path(folder)
    model = build(load_spec(folder / "spec.yaml"))
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return model
