"""Measured latency of a network's forward pass, the way ``torch.utils.benchmark`` measures it.

A latency is the median time of one forward pass of a freshly built network in eval mode
under ``torch.inference_mode``, after warm-up, at a fixed thread count, with CUDA synchronised
(``Timer.blocked_autorange`` runs blocks of calls until ``min_run_time`` and keeps each block's
time per call); the interquartile range of the blocks is its spread. The batch is 1 by default:
the time a deployed model takes for one image, which is what "how fast is it" asks; a search
run on throughput would set a larger batch.

Measurements are cached per machine (``train.machine``), network (``NetworkSpec.key``), batch
and device in ``$SCALESEARCH_CACHE_DIR/latency.json``, so a second look at a network costs
nothing. A latency speaks of the machine it was measured on: the cache key and ``Latency.machine``
name it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..net.spec import NetworkSpec
from ..train.machine import MachineCache

CACHE = MachineCache("latency.json")
MIN_RUN_TIME = 0.2   # seconds of timed calls per measurement (after warm-up)


@dataclass(frozen=True)
class Latency:
    """One network's forward latency: the median and the interquartile range over timed blocks."""

    median_ms: float
    iqr_ms: float
    batch: int
    resolution: int
    device: str
    threads: int
    blocks: int
    machine: str

    @property
    def spread(self) -> float:
        """The interquartile range as a fraction of the median: how far one timing can be trusted."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def text(self) -> str:
        return (f"{self.median_ms:,.3g} ms (median of {self.blocks} blocks, interquartile range "
                f"{self.iqr_ms:,.2g} ms) at batch {self.batch} on {self.machine}")


def measure_latency(spec: NetworkSpec, *, device: str = "cpu", batch: int = 1, threads: int | None = None,
                    min_run_time: float = MIN_RUN_TIME, cached: bool = True) -> Latency:
    """``spec``'s forward latency on ``device`` (see the module docstring), from the cache when
    this machine has measured the same network, batch and device before."""
    import torch

    from ..train.machine import machine

    threads = threads or torch.get_num_threads()
    where = machine(device if device != "cpu" else "cpu", threads if device == "cpu" else None)
    key = f"{where.key()}|{spec.key()}|{batch}"
    store = CACHE.read() if cached else {}
    if key in store:
        try:
            return Latency(**store[key])
        except TypeError:
            pass   # an entry of another format: measured again
    found = _time(spec, device, batch, threads, min_run_time, where.label)
    if cached:
        CACHE.write(key, found.as_dict())
    return found


def _time(spec: NetworkSpec, device: str, batch: int, threads: int, min_run_time: float, label: str) -> Latency:
    import torch
    from torch.utils import benchmark

    from .models import build

    model = build(spec).eval().to(device)
    x = torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution, device=device)
    with torch.inference_mode():
        for _ in range(2):   # warm-up: allocations, oneDNN's kernel choice, CUDA's lazy init
            model(x)
        timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads)
        found = timer.blocked_autorange(min_run_time=min_run_time)
    return Latency(median_ms=found.median * 1e3, iqr_ms=found.iqr * 1e3, batch=batch, resolution=spec.resolution,
                   device=device, threads=threads, blocks=len(found.times), machine=label)
