"""The form of a training step: fp32 or bf16 autocast, contiguous or channels-last memory, and
the rule that picks one from the network's structure and the device (``forms`` times them)."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .recipe import LAYOUTS, PRECISIONS




@dataclass(frozen=True)
class StepForm:
    """How a training step runs: ``precision`` "fp32" or "bf16" and ``layout`` "contiguous" or
    "channels_last" (the memory format of the weights and the inputs).

    bf16 is the forward pass under bfloat16 autocast (convolutions and linear layers take bf16
    inputs) with every batch norm fed fp32 (``applied``), so the statistics, the normalised
    activations and the residual sums stay fp32; weights, gradients and the optimizer are fp32.
    With batch norm in bf16 too, 2 of the demo's 6 trials (2 seeds x 3 candidates) fell from
    32-36% to 20-23% top-1, their training loss stuck 0.3 above the fp32 runs'; with it in fp32
    both trained as in fp32 (docs/performance.md).
    """

    precision: str
    layout: str

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.layout == "channels_last" else torch.contiguous_format

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """While inside, ``model``'s batch norms take fp32 inputs when the form is bf16 (forward
        pre-hooks, removed on the way out); an fp32 form changes nothing."""
        handles = [m.register_forward_pre_hook(_fp32_input) for m in model.modules()
                   if self.precision == "bf16" and isinstance(m, nn.modules.batchnorm._BatchNorm)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def __str__(self) -> str:
        return f"{self.precision} {self.layout.replace('_', '-')}"


def _fp32_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].float(), *args[1:])


def step_form(model: nn.Module, device: torch.device, precision: str = "auto", layout: str = "auto") -> StepForm:
    """The form of the step for ``model`` on ``device``: ``precision`` and ``layout`` as
    given, each "auto" one by the rule measured on every base (docs/performance.md).

    On CUDA: bf16 and channels-last.  On a CPU, the rule splits networks by whether they
    have grouped (depthwise) convolutions, the one structural feature that reversed the
    ranking of the forms in the measurements: oneDNN runs depthwise convolutions about
    twice as fast channels-last, and its bf16 depthwise kernels are slower than fp32 ones,
    so those networks (MobileNetV2, EfficientNet) train in fp32 channels-last; dense
    networks (the ResNets) in bf16 where the CPU has native bf16 instructions
    (``cpu_has_bf16``), channels-last, else in fp32 contiguous.  The rule depends only on
    the network and the machine, so the same command repeats exactly on the same machine.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    device = torch.device(device)
    grouped = has_grouped_convolutions(model)
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16"
        else:
            precision = "bf16" if not grouped and cpu_has_bf16() else "fp32"
    if layout == "auto":
        if device.type == "cuda" or grouped:
            layout = "channels_last"
        else:
            layout = "channels_last" if precision == "bf16" else "contiguous"
    return StepForm(precision, layout)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX-512 BF16 or AMX), where bf16 autocast
    pays; oneDNN emulates it on older AVX-512 CPUs, slower than fp32."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False  # no way to tell native from emulated: stay with fp32
    return "avx512_bf16" in flags or "amx_bf16" in flags


def has_grouped_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` has a grouped (depthwise) convolution: what splits the step-form rule."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
