"""The step's form for a run: chosen by timing the forms on this machine, cached, recorded.

A training step runs in one of up to four forms (``step_form.StepForm``: fp32 or bf16 autocast,
contiguous or channels-last memory).  Which is fastest depends on the network and on the
machine: on a Zen 4 CPU (AVX-512 BF16) ResNet-20 is fastest in bf16 channels-last, on a Zen 3
(AVX2 only, bf16 emulated about 47x slower than fp32) in fp32 channels-last, and MobileNetV2
there in fp32 contiguous, against channels-last on Zen 4 (docs/performance.md has both
tables).  No rule read off one CPU holds on the other, so a run measures:

* ``choose`` times every form this machine runs natively (bf16 only with AVX-512 BF16 or
  AMX) on the run's cheapest network of each base, at the recipe's batch (cut to
  ``QUICK_FLOPS`` forward FLOPs), rounds interleaved, best of the rounds; it keeps the
  rule's form (``step_form.step_form``) unless another is more than ``STICKY`` faster;
* the timing is cached per machine (CPU model and flags, torch version, threads), network,
  resolution and batch in ``$SCALESEARCH_CACHE_DIR`` (default ~/.cache/scalesearch), so the
  same command on the same machine takes the same form and gives the same numbers;
* a run records its forms in config.json (``step_forms``) and each row's in trials.csv, and
  keeps them: a resumed run continues in its recorded form, and one recorded in bf16 is
  refused on a CPU that only emulates bf16 (its new trials would take many times as long);
* a form given by hand (``train.precision``, ``train.layout``) is used as given, with a
  warning before training when this machine runs it far below the fastest form
  (``SLOW``), bf16 on a CPU that emulates it above all (``bf16_slowdown`` measures that).

On CUDA the rule stands (bf16 channels-last).  A backend that trains nothing (the tests' fake
one) takes the rule without timing.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import UserError
from .machine import MachineCache, machine

CACHE = MachineCache("step_forms.json")
ROUNDS = 3            # interleaved rounds of timing; the best of them counts
STEPS = 2             # timed steps per form and round (after one untimed)
STICKY = 0.03         # the rule's form is kept unless another is faster by more than this fraction
SLOW = 0.8            # a given form below this fraction of the fastest is warned about
QUICK_FLOPS = 2e10    # a quick timing steps at most this many forward FLOPs (a few seconds on a CPU)
FORMS = (("fp32", "contiguous"), ("fp32", "channels_last"), ("bf16", "contiguous"), ("bf16", "channels_last"))


# -- the cache --------------------------------------------------------------------------

def _cached(key: str, measure: Any, valid: Any) -> tuple[Any, bool]:
    """(the cached value of ``key``, True), or (``measure()``, False) stored under it; a cached
    value that ``valid`` refuses (a damaged or hand-edited cache) is measured again."""
    entries = CACHE.read()
    if key in entries and valid(entries[key]):
        return entries[key], True
    value = measure()
    CACHE.write(key, value)
    return value, False


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")


# -- measuring --------------------------------------------------------------------------

def bf16_slowdown(threads: int | None = None, size: int = 512, repeats: int = 3) -> float:
    """How many times slower a bf16 matmul runs than an fp32 one on this CPU (``size``-cube,
    best of ``repeats`` each), cached per machine: near 1 or below where bf16 is native, about
    47 on a Zen 3 EPYC, where oneDNN emulates it."""
    import torch

    from .loop import _num_threads

    def measure() -> float:
        best = {}
        with _num_threads(threads), torch.random.fork_rng():
            torch.manual_seed(0)
            for dtype in (torch.float32, torch.bfloat16):
                a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
                a @ b
                times = []
                for _ in range(repeats):
                    tick = time.perf_counter()
                    a @ b
                    times.append(time.perf_counter() - tick)
                best[dtype] = min(times)
        return best[torch.bfloat16] / max(best[torch.float32], 1e-9)

    value, _ = _cached(f"bf16-matmul|{machine('cpu', threads).key()}|{size}", measure, _positive)
    return float(value)


def time_forms(spec: Any, recipe: Any, forms: Sequence[tuple[str, str]], batch: int, device: str,
               threads: int | None, rounds: int = ROUNDS, steps: int = STEPS) -> dict[str, float]:
    """Training images/s of ``spec`` in each of ``forms`` ((precision, layout) pairs) with the
    recipe's own step (``train.seconds_per_image``) at ``batch`` images; rounds interleave the
    forms, so a slow spell of a shared machine hits them alike, and the best round counts."""
    import torch

    from .loop import build_model, seconds_per_image

    models = {}
    with torch.random.fork_rng():
        for form in forms:
            torch.manual_seed(0)
            models[form] = build_model(spec, recipe)
    seconds: dict[tuple[str, str], list[float]] = {form: [] for form in forms}
    for _ in range(rounds):
        for form in forms:
            config = recipe.replace(precision=form[0], layout=form[1], device=device, threads=threads)
            seconds[form].append(seconds_per_image(models[form], spec.resolution, config, batch, spec.num_classes,
                                                   steps))
    return {form_name(*form): 1 / min(times) for form, times in seconds.items()}


def form_name(precision: str, layout: str) -> str:
    """"fp32 channels-last": a form as tables and messages name it (``str(StepForm)``)."""
    return f"{precision} {layout.replace('_', '-')}"


# -- choosing ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FormChoice:
    """The form a run's trials of one base train in, and how it was chosen.

    ``how``: "timed" (measured now), "cached" (measured before on this machine), "recorded"
    (the run's own, kept on resume), "given" (precision and layout set by hand) or "rule"
    (CUDA, or a backend that trains nothing).  ``rates``: images/s per form name where timed.
    ``note``: a warning to show before training ("" when none).
    """

    precision: str
    layout: str
    how: str
    network: str = ""
    resolution: int | None = None
    batch: int | None = None
    machine: str = ""
    rates: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def name(self) -> str:
        return form_name(self.precision, self.layout)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rates"] = {k: round(v, 1) for k, v in self.rates.items()}
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "FormChoice | None":
        """A recorded choice read back (None when it is not one)."""
        if not isinstance(data, dict) or (data.get("precision"), data.get("layout")) not in FORMS:
            return None
        rates = data.get("rates") if isinstance(data.get("rates"), dict) else {}
        return cls(data["precision"], data["layout"], str(data.get("how") or "recorded"),
                   rates={str(k): float(v) for k, v in rates.items() if _positive(v)})

    def text(self) -> str:
        """One line for the screen: the form, how it was chosen, and the timing behind it."""
        where = f" on {self.network} at {self.resolution}px" if self.network else ""
        rates = ", ".join(f"{name} {rate:,.0f}" for name, rate in sorted(self.rates.items(), key=lambda kv: -kv[1]))
        timed = f" (images/s{where}, batch {self.batch}: {rates})" if rates else ""
        how = {"timed": f"the fastest measured on {self.machine}",
               "cached": f"the fastest measured before on {self.machine}",
               "recorded": "the run's own, recorded in config.json",
               "given": "as given", "rule": "by the rule (docs/performance.md)"}.get(self.how, self.how)
        return f"step form: {self.name}, {how}{timed}"


def _timing_batch(spec: Any, recipe: Any, n_train: int) -> int:
    from ..measure.cost import count_cost
    from .recipe import planned_steps

    batch = planned_steps(recipe, n_train)[1]
    flops = max(count_cost(spec).flops, 1)
    return max(2, min(batch, max(8, int(QUICK_FLOPS // flops))))


def choose(spec: Any, recipe: Any, device: str, threads: int | None, n_train: int, *, timed: bool = True,
           recorded: FormChoice | None = None) -> FormChoice:
    """The form ``spec`` trains in under ``recipe`` on ``device`` at ``threads``; see the module
    docstring.  ``recorded``: the run's own choice, kept (and refused where it cannot run well
    here); ``timed`` False times nothing: a cached timing still decides, else the rule."""
    from ..measure.models import build
    from .step_form import cpu_has_bf16, step_form

    cpu = not device.startswith("cuda")
    native = [f for f in FORMS if f[0] == "fp32" or cpu_has_bf16()] if cpu else list(FORMS)
    if recorded is not None:
        emulated = cpu and recorded.precision == "bf16" and not cpu_has_bf16()
        if emulated and recipe.precision == "auto":
            raise UserError(
                f"this run trained its trials in {recorded.name} (recorded in config.json), and this CPU has no "
                f"native bf16 ({machine('cpu', threads).label}): bf16 is emulated here, a matmul "
                f"{bf16_slowdown(threads):.0f}x slower than fp32, and fp32 trials would not rank with the bf16 ones; "
                f"resume it on a CPU with avx512_bf16 or amx_bf16, or start a new run with another --out")
        note = _emulated_note(threads, "") if emulated else ""
        return dataclasses.replace(recorded, how="recorded", note=note)
    rule = step_form(build(spec, device="meta"), device, recipe.precision, recipe.layout)
    chosen = (rule.precision, rule.layout)
    base = dict(network=spec.name, resolution=spec.resolution, machine=machine(device if not cpu else "cpu",
                                                                                    threads).label)
    given = recipe.precision != "auto" and recipe.layout != "auto"
    untimed = FormChoice(*chosen, how="given" if given else "rule", **base)
    if not cpu:
        return untimed
    allowed = [f for f in native if recipe.precision in ("auto", f[0]) and recipe.layout in ("auto", f[1])]
    batch = _timing_batch(spec, recipe, n_train)
    key = f"form|{machine('cpu', threads).key()}|{spec.key()}|{batch}|{recipe.feature_norm}|{recipe.optimizer}|{recipe.clip_norm}"
    names = {form_name(*f) for f in native}
    valid = lambda v: isinstance(v, dict) and set(v) == names and all(map(_positive, v.values()))  # noqa: E731
    if not timed and not valid(CACHE.read().get(key)):
        return untimed  # nothing measured yet, and nothing to be timed now
    rates, hit = _cached(key, lambda: time_forms(spec, recipe, native, batch, "cpu", threads), valid)
    rates = {str(k): float(v) for k, v in rates.items()}
    fastest = max(rates, key=rates.get)
    note = ""
    if allowed and not given:
        best = max(allowed, key=lambda f: rates[form_name(*f)])
        if chosen not in allowed or rates[form_name(*best)] > (1 + STICKY) * rates[form_name(*chosen)]:
            chosen = best
    if not allowed:  # bf16 given on a CPU that emulates it
        note = _emulated_note(threads, f" at {rates[fastest]:,.0f} images/s")
    elif rates[form_name(*chosen)] < SLOW * rates[fastest]:
        what = " and ".join(f"train.{k}={v}" for k, v in (("precision", recipe.precision), ("layout", recipe.layout))
                            if v != "auto")
        note = (f"{what} trains {spec.name} in {form_name(*chosen)} at {rates[form_name(*chosen)]:,.0f} images/s here, "
                f"{rates[form_name(*chosen)] / rates[fastest]:.2f}x the fastest form, {fastest} "
                f"({rates[fastest]:,.0f} images/s); auto picks the fastest")
    return FormChoice(*chosen, how="given" if given else "cached" if hit else "timed", batch=batch, rates=rates,
                      note=note, **base)


def _emulated_note(threads: int | None, speed: str) -> str:
    return (f"train.precision bf16 on a CPU without native bf16 ({machine('cpu', threads).label}): oneDNN emulates "
            f"it, and a matmul ran {bf16_slowdown(threads):.0f}x slower than in fp32 here, so training will take many "
            f"times as long; precision auto (the default) trains in fp32 here{speed}")


def recorded_forms(config: Any, rows: Sequence[Any] = ()) -> dict[str, FormChoice]:
    """The forms a run recorded: config.json's ``step_forms`` by base; for a run written before
    they were, the one form its finished rows (``rows``) all share, under every base.  The caller
    asks only once a trial has finished: before that nothing trained in the recorded form."""
    found = config.get("step_forms") if isinstance(config, dict) else None
    if isinstance(found, dict):
        out = {name: FormChoice.from_dict(value) for name, value in found.items()}
        return {name: choice for name, choice in out.items() if choice is not None}
    forms = {(r.precision, r.layout) for r in rows if r.precision and r.layout}
    if len(forms) == 1:
        (form,) = forms
        if form in FORMS:
            return {"*": FormChoice(*form, how="recorded")}
    return {}


@dataclass(frozen=True)
class FormsChosen:
    """The event: each base's form, chosen before anything trains (shown with its warnings)."""

    choices: tuple[FormChoice, ...]


def fix_forms(trials: Sequence[Any], context: Any, n_train: int, recorded: dict[str, FormChoice],
              timed: bool = True) -> tuple[list[Any], dict[str, FormChoice]]:
    """Every trial's recipe with its base's form fixed (precision and layout no longer "auto"),
    and the choice per base (``spec.name``), to record in config.json.  Each base is timed on
    its cheapest trial's network; ``recorded`` forms (by base, or "*" for all) are kept."""
    from .machine import resolve_device

    device = resolve_device(context.device)
    groups: dict[str, list[Any]] = {}
    for trial in trials:
        groups.setdefault(trial.spec.name, []).append(trial)
    choices = {}
    for name, group in groups.items():
        cheapest = min(group, key=lambda t: (t.flops, t.spec.resolution))
        choices[name] = choose(cheapest.spec, cheapest.recipe, device, context.threads, n_train, timed=timed,
                               recorded=recorded.get(name) or recorded.get("*"))
    fixed = [dataclasses.replace(t, recipe=t.recipe.replace(precision=choices[t.spec.name].precision,
                                                            layout=choices[t.spec.name].layout)) for t in trials]
    return fixed, choices
