"""What machine a step runs on: the CPU (model, vector instructions, bf16), torch, threads, or
the GPU; the key under which a timing of the step's forms is cached, and the label every run
prints and every row of trials.csv records."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

CACHE_ENV = "SCALESEARCH_CACHE_DIR"   # where measurements of this machine are kept (default ~/.cache/scalesearch)


def resolve_device(device: str) -> str:
    """``auto`` as the device a trial trains on: cuda where torch sees a GPU, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def isa(flags: Sequence[str]) -> str:
    """The widest vector instruction set named by the CPU ``flags``, with bf16 named when native."""
    have = set(flags)
    for name in ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "avx"):
        if name in have:
            return name
    return "no avx"


@dataclass(frozen=True)
class Machine:
    """What a timing of the step's forms depends on besides the network."""

    cpu: str             # model name, family and model
    isa: str             # the widest vector instructions (``isa``)
    flags: str           # a hash of the whole flag list
    torch: str
    threads: int
    device: str

    @property
    def label(self) -> str:
        """One line for screens and tables: "AMD EPYC family 25 model 1 (avx2, 2 threads)"."""
        if self.device != "cpu":
            return self.device
        return f"{self.cpu} ({self.isa}, {self.threads} thread{'' if self.threads == 1 else 's'})"

    def key(self) -> str:
        return "|".join((self.cpu, self.flags, self.torch, str(self.threads), self.device))


def machine(device: str = "cpu", threads: int | None = None) -> Machine:
    """This machine as a step's timing sees it, for ``device`` at ``threads`` (None: torch's now)."""
    import torch

    return _machine(device, threads or torch.get_num_threads())


@functools.lru_cache(maxsize=None)
def _machine(device: str, threads: int) -> Machine:
    import torch

    info = cpu_info()
    flags = info.get("flags", "").split()
    cpu = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        cpu += f" family {info['cpu family']} model {info.get('model', '?')}"
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        device_name = torch.cuda.get_device_name(index if index is not None else torch.cuda.current_device())
    else:
        device_name = device
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return Machine(cpu=cpu, isa=isa(flags), flags=digest, torch=torch.__version__,
                   threads=threads, device=device_name)


def machine_label(device: Any, threads: int | None = None) -> str:
    """``Machine.label`` of ``device`` (a torch.device or its name)."""
    return machine(str(device), threads).label


@dataclass(frozen=True)
class MachineCache:
    """A JSON file of measurements taken on machines (each entry's key names its machine) in
    ``$SCALESEARCH_CACHE_DIR``: a file that is damaged or of another format reads as empty, and
    one that cannot be written only costs the measurement again."""

    file: str
    format: int = 1

    @property
    def path(self) -> Path:
        return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "scalesearch") / self.file

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != self.format or not isinstance(data.get("entries"), dict):
            return {}
        return data["entries"]

    def write(self, key: str, value: dict[str, Any]) -> None:
        """Add one entry: read, merge, replace atomically."""
        from ..study.rundir import json_text, write_atomic

        entries = self.read()
        entries[key] = value
        try:
            write_atomic(self.path, json_text({"format": self.format, "entries": entries}))
        except (OSError, ValueError):   # ValueError: the run-file layer's UserError for an unwritable folder
            pass
