"""Measured latency of a network's forward pass, the way ``torch.utils.benchmark`` measures it.

A latency is the median time of one forward pass of a freshly built network in eval mode
under ``torch.inference_mode``, after warm-up, at a fixed thread count, with CUDA synchronised
(``Timer.blocked_autorange`` runs blocks of calls and keeps each block's time per call), over
the blocks of BUILDS fresh builds of the network sharing ``min_run_time``; the interquartile
range of those blocks is its spread. The batch is 1 by default:
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
MIN_RUN_TIME = 0.3   # seconds of timed calls per measurement (after warm-up), shared by the builds
BUILDS = 3           # fresh builds (network and input) a measurement spans: on a CPU one build can run
#                      10-20% from another at the same size (where the buffers fall), a spread the
#                      blocks of one build never show (experiments/latency-constraint/NOTES.md)
NOISY = 0.2          # an interquartile range above this fraction of the median is timed again,
RETRIES = 2          # at most this many times (another process took the cores for a while)


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

    if device.startswith("cuda") and not torch.cuda.is_available():
        from ..errors import UserError

        raise UserError(f"latency on device '{device}': torch sees no GPU on this machine (time on cpu, or run "
                        f"where the GPU is)")
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

    def one_build() -> Any:
        model = build(spec).eval().to(device)
        x = torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution, device=device)
        for _ in range(2):   # warm-up: allocations, oneDNN's kernel choice, CUDA's lazy init
            model(x)
        timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads)
        return timer.blocked_autorange(min_run_time=min_run_time / BUILDS)

    def timed() -> Any:
        return benchmark.Measurement.merge([one_build() for _ in range(BUILDS)])[0]

    with torch.inference_mode():
        found = timed()
        for _ in range(RETRIES):   # a busy machine: timed again, the quieter timing kept
            if found.iqr <= NOISY * found.median:
                break
            found = min(found, timed(), key=lambda m: m.median + m.iqr)
    return Latency(median_ms=found.median * 1e3, iqr_ms=found.iqr * 1e3, batch=batch, resolution=spec.resolution,
                   device=device, threads=threads, blocks=len(found.times), machine=label)


def candidate_timer(base: NetworkSpec, rounding: Any, *, device: str = "cpu", threads: int | None = None,
                    batch: int = 1, native: NetworkSpec | None = None):  # noqa: ANN201 - search.fit.Timer
    """The search's ``Timer``: the latency of (alpha, beta) at a proxy resolution, measured on
    ``device`` at ``batch`` on ``threads`` threads.  With ``native`` (the base at its own
    resolution and strides), the network timed is native scaled by (alpha, beta, gamma), gamma
    read off the proxy resolution: the deployed model's latency rather than the proxy's."""
    from ..net.scaling import scale

    def timer(alpha: float, beta: float, resolution: int) -> Latency:
        gamma = resolution / base.resolution
        if native is None:
            spec = scale(base, alpha, beta, 1.0, rounding).replace(resolution=resolution)
        else:
            spec = scale(native, alpha, beta, gamma, rounding)
        return measure_latency(spec, device=device, batch=batch, threads=threads)

    return timer
