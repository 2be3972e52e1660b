"""Human-readable numbers and aligned tables (pandas lays them out) for the CLI."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'; billions keep three decimals as papers print FLOPs (0.386G)."""
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= limit:
            value = n / limit
            return f"{value:.3f}{suffix}{unit}" if suffix == "G" else f"{value:.3g}{suffix}{unit}"
    return f"{n:g}{unit}"


def table(rows: Sequence[dict[str, Any]], columns: Iterable[str | tuple[str, str]]) -> str:
    """An aligned text table of ``rows``; ``columns`` are keys or (key, format spec) pairs."""
    import pandas as pd

    cols = [(c, "") if isinstance(c, str) else c for c in columns]

    def cell(v: Any, spec: str) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "-"
        if spec:
            return format(v, spec)
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    data = {}
    for key, spec in cols:
        values = [r.get(key) for r in rows]
        text = [cell(v, spec) for v in values]
        if any(isinstance(v, str) for v in values):  # text columns read better left-aligned
            width = max(len(key), *(len(t) for t in text))
            text = [t.ljust(width) for t in text]
            key_label = key.ljust(width)
        else:
            key_label = key
        data[key_label] = text
    return pd.DataFrame(data).to_string(index=False)


def duration(seconds: float) -> str:
    """Seconds as a person reads them: "42 s", "3 min 05 s", "2 h 07 min"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"
