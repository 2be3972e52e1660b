"""The step's form of a run (scalesearch/train/forms.py): chosen by timing on this machine, cached,
recorded in config.json and trials.csv, and kept on resume.

The timings are replaced by fixed rates here (``rates``), so every choice below is decided by
the numbers the test gives, never by how busy the machine is; one test times for real and
checks only what does not depend on the clock."""

from __future__ import annotations

import json

import pytest

import scalesearch.train.forms as forms
import scalesearch.train.machine as machine
import scalesearch.train.step_form as train
from scalesearch.net.bases import get_base
from scalesearch.errors import UserError
from scalesearch.train.forms import FormChoice, choose, fix_forms, recorded_forms
from scalesearch.train.machine import isa
from scalesearch.train.recipe import TrainConfig

from conftest import cli

SPEC = get_base("resnet20-cifar").replace(resolution=16, num_classes=3)
DEPTHWISE = get_base("mobilenetv2").replace(resolution=16, num_classes=3)


@pytest.fixture
def rates(monkeypatch, tmp_path):
    """Set the rates (images/s by form name) a timing returns, and whether the CPU has native
    bf16; each test gets an empty cache.  Returns the list of forms each timing was asked for."""
    monkeypatch.setenv(machine.CACHE_ENV, str(tmp_path / "cache"))
    asked: list = []
    table: dict = {}

    def fake_time(spec, recipe, wanted, batch, device, threads, rounds=3, steps=2):  # noqa: ANN001, ANN202
        asked.append([forms.form_name(*f) for f in wanted])
        return {forms.form_name(*f): table[forms.form_name(*f)] for f in wanted}

    def set_rates(native_bf16: bool, **given: float) -> list:
        table.clear()
        table.update({k.replace("_", " ").replace("channels last", "channels-last"): v for k, v in given.items()})
        monkeypatch.setattr(train, "cpu_has_bf16", lambda: native_bf16)
        return asked

    monkeypatch.setattr(forms, "time_forms", fake_time)
    monkeypatch.setattr(forms, "bf16_slowdown", lambda threads=None: 47.0)
    return set_rates


def test_the_fastest_native_form_is_chosen_and_cached(rates):
    """Without native bf16 only the fp32 forms are timed; the fastest wins when it beats the
    rule's form by more than STICKY, and the second call reads the cache."""
    asked = rates(False, fp32_contiguous=360.0, fp32_channels_last=444.0)
    first = choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000)
    assert (first.precision, first.layout, first.how) == ("fp32", "channels_last", "timed")
    assert asked == [["fp32 contiguous", "fp32 channels-last"]] and first.note == ""
    again = choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000)
    assert (again.precision, again.layout, again.how) == ("fp32", "channels_last", "cached") and len(asked) == 1
    assert again.rates == {"fp32 contiguous": 360.0, "fp32 channels-last": 444.0}
    assert "step form: fp32 channels-last, the fastest measured before on" in again.text()
    assert "fp32 channels-last 444, fp32 contiguous 360" in again.text()


def test_the_rules_form_stays_unless_another_is_clearly_faster(rates):
    """A gap within STICKY (3%) keeps the rule's form, so timing noise does not flip a choice;
    with native bf16 all four forms are timed."""
    asked = rates(True, fp32_contiguous=100.0, fp32_channels_last=102.0, bf16_contiguous=90.0,
                  bf16_channels_last=101.0)
    kept = choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000)
    assert (kept.precision, kept.layout) == ("bf16", "channels_last") and len(asked[0]) == 4
    rates(False, fp32_contiguous=112.0, fp32_channels_last=100.0)
    depthwise = choose(DEPTHWISE, TrainConfig(), "cpu", 2, n_train=1000)  # the rule says channels-last
    assert (depthwise.precision, depthwise.layout) == ("fp32", "contiguous")


def test_a_given_form_is_kept_and_warned_about_when_far_slower(rates):
    rates(False, fp32_contiguous=300.0, fp32_channels_last=450.0)
    given = choose(SPEC, TrainConfig(precision="fp32", layout="contiguous"), "cpu", 2, n_train=1000)
    assert (given.precision, given.layout, given.how) == ("fp32", "contiguous", "given")
    assert given.note == ("train.precision=fp32 and train.layout=contiguous trains resnet20-cifar in fp32 contiguous "
                          "at 300 images/s here, 0.67x the fastest form, fp32 channels-last (450 images/s); auto "
                          "picks the fastest")
    layout = choose(SPEC, TrainConfig(layout="contiguous"), "cpu", 2, n_train=1000)
    assert (layout.precision, layout.layout, layout.how) == ("fp32", "contiguous", "cached")
    assert layout.note.startswith("train.layout=contiguous trains")
    close = choose(SPEC, TrainConfig(layout="channels_last"), "cpu", 2, n_train=1000)
    assert close.note == ""


def test_bf16_given_on_a_cpu_that_emulates_it_is_warned_about_with_the_measured_slowdown(rates):
    asked = rates(False, fp32_contiguous=300.0, fp32_channels_last=450.0)
    given = choose(SPEC, TrainConfig(precision="bf16"), "cpu", 2, n_train=1000)
    assert (given.precision, given.layout) == ("bf16", "channels_last")
    assert asked == [["fp32 contiguous", "fp32 channels-last"]]  # the emulated forms are never timed
    assert "train.precision bf16 on a CPU without native bf16" in given.note
    assert "a matmul ran 47x slower than in fp32 here" in given.note and "at 450 images/s" in given.note


def test_cuda_and_an_untimed_run_take_the_rule_unless_this_machine_timed_it_before(rates):
    asked = rates(False, fp32_contiguous=1.0, fp32_channels_last=2.0)
    cuda = choose(SPEC, TrainConfig(), "cuda", 2, n_train=1000)
    assert (cuda.precision, cuda.layout, cuda.how) == ("bf16", "channels_last", "rule")
    untimed = choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000, timed=False)
    assert (untimed.precision, untimed.layout, untimed.how) == ("fp32", "contiguous", "rule") and asked == []
    choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000)  # timed once; an untimed call then reads the cache
    cached = choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000, timed=False)
    assert (cached.layout, cached.how) == ("channels_last", "cached") and len(asked) == 1


def test_a_recorded_form_is_kept_and_a_recorded_bf16_is_refused_where_it_is_emulated(rates):
    """A run continues in its recorded form; one recorded in bf16 under precision auto is refused
    by name on a CPU without native bf16 (its fp32 trials would not rank with the bf16 ones), and
    continues with the emulation warning where bf16 was given by hand."""
    asked = rates(False, fp32_contiguous=500.0, fp32_channels_last=100.0)
    recorded = FormChoice("fp32", "channels_last", "timed", rates={"fp32 channels-last": 444.0})
    kept = choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000, recorded=recorded)
    assert (kept.precision, kept.layout, kept.how) == ("fp32", "channels_last", "recorded") and asked == []
    bf16 = FormChoice("bf16", "channels_last", "timed")
    with pytest.raises(UserError, match=r"this run trained its trials in bf16 channels-last \(recorded in "
                                        r"config.json\), and this CPU has no native bf16 .* 47x slower than fp32"):
        choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000, recorded=bf16)
    given = choose(SPEC, TrainConfig(precision="bf16"), "cpu", 2, n_train=1000, recorded=bf16)
    assert given.precision == "bf16" and "without native bf16" in given.note
    rates(True)
    assert choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000, recorded=bf16).precision == "bf16"


def test_recorded_forms_come_from_config_json_else_from_the_rows():
    from scalesearch.study.rows import TrialRow

    record = {"resnet20-cifar": FormChoice("fp32", "channels_last", "timed").as_dict(), "bad": {"precision": "x"}}
    found = recorded_forms({"step_forms": record})
    assert list(found) == ["resnet20-cifar"] and found["resnet20-cifar"].layout == "channels_last"
    rows = [TrialRow(trial=f"c{i}-s0", candidate=i, seed=0, precision="bf16", layout="channels_last") for i in (1, 2)]
    assert recorded_forms({}, rows)["*"].precision == "bf16"
    mixed = rows + [TrialRow(trial="c3-s0", candidate=3, seed=0, precision="fp32", layout="contiguous")]
    assert recorded_forms({}, mixed) == {}
    edited = recorded_forms({"step_forms": {"a": {"precision": "fp32", "layout": "contiguous", "rates": [1]},
                                            "b": {"precision": "bf16", "layout": "channels_last", "how": None}}})
    assert (edited["a"].how, edited["a"].rates, edited["b"].how) == ("recorded", {}, "recorded")


def test_fix_forms_sets_each_bases_form_on_every_trial(rates):
    from scalesearch.study.rows import TrialContext, TrialSpec
    from scalesearch.settings import DataSettings

    rates(False, fp32_contiguous=100.0, fp32_channels_last=200.0)
    trials = [TrialSpec(candidate=i, seed=0, spec=spec, recipe=TrainConfig(), flops=i)
              for i, spec in enumerate((SPEC, SPEC.replace(resolution=24), DEPTHWISE))]
    context = TrialContext(data=DataSettings(), device="cpu", threads=1)
    fixed, choices = fix_forms(trials, context, 1000, {})
    assert sorted(choices) == ["mobilenetv2", "resnet20-cifar"]
    assert {(t.recipe.precision, t.recipe.layout) for t in fixed} == {("fp32", "channels_last")}
    assert choices["resnet20-cifar"].resolution == 16  # timed on the base's cheapest trial


def test_isa_names_the_widest_vector_instructions():
    assert isa(["sse2", "avx", "avx2", "fma"]) == "avx2"
    assert isa(["avx2", "avx512f", "avx512_bf16"]) == "avx512_bf16"
    assert isa(["avx2", "amx_bf16", "avx512_bf16"]) == "amx_bf16" and isa([]) == "no avx"


def test_a_run_records_its_form_and_keeps_it_on_resume(colours, tiny, tmp_path, rates):
    """End to end: the chosen form is said before training and recorded in config.json and in
    every row of trials.csv; resumed where the timing now favours another form, the run goes on
    in its own; a run recorded in bf16 (as on another machine) is refused on a CPU that emulates
    bf16, its files untouched."""
    from scalesearch.study.rundir import RunDir

    out = tmp_path / "run"
    rates(False, fp32_contiguous=100.0, fp32_channels_last=300.0)
    first = cli("grid", *tiny, "--out", out)
    assert first.exit_code == 0, first.output
    assert "step form: fp32 channels-last, the fastest measured on" in first.output
    config = json.loads((out / "config.json").read_text())
    assert config["step_forms"]["resnet20-cifar"]["layout"] == "channels_last"
    assert config["step_forms"]["resnet20-cifar"]["rates"]["fp32 channels-last"] == 300.0

    rates(False, fp32_contiguous=300.0, fp32_channels_last=100.0)
    more = [*tiny[:tiny.index("--max-trials")], "--max-trials", "2", *tiny[tiny.index("--max-trials") + 2:]]
    resumed = cli("grid", *more, "--out", out)
    assert resumed.exit_code == 0, resumed.output
    assert "step form: fp32 channels-last, the run's own, recorded in config.json" in resumed.output
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 3 and {"precision", "layout", "machine"} <= set(rows[0].split(","))
    for line in rows[1:]:
        assert ",fp32,channels_last," in line and "thread" in line

    config = json.loads((out / "config.json").read_text())
    config["step_forms"]["resnet20-cifar"].update(precision="bf16")
    RunDir(out).write_run_json("config.json", config)  # as a machine with native bf16 would have written it
    files = lambda: {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}  # noqa: E731
    before = files()
    more[more.index("--max-trials") + 1] = "3"
    refused = cli("grid", *more, "--out", out)
    assert refused.exit_code == 2 and "this run trained its trials in bf16 channels-last" in refused.output
    assert files() == before


def test_the_timing_itself_gives_a_rate_for_every_native_form(tmp_path, monkeypatch):
    """The real timing on a tiny network: a positive rate per fp32 form (and per bf16 form where
    native), whatever the machine's load; which one wins is not asserted."""
    monkeypatch.setenv(machine.CACHE_ENV, str(tmp_path))
    found = forms.time_forms(SPEC, TrainConfig(batch_size=8), forms.FORMS[:2], 8, "cpu", 1, rounds=1, steps=1)
    assert set(found) == {"fp32 contiguous", "fp32 channels-last"} and all(v > 0 for v in found.values())


def test_a_damaged_cache_is_timed_again(rates):
    """A cache file that is not JSON, or whose entry is not a rate for every form, is measured
    again and rewritten; nothing is refused."""
    asked = rates(False, fp32_contiguous=100.0, fp32_channels_last=200.0)
    forms.CACHE.path.parent.mkdir(parents=True, exist_ok=True)
    forms.CACHE.path.write_text("{not json")
    assert choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000).how == "timed"
    data = json.loads(forms.CACHE.path.read_text())
    (key,) = data["entries"]
    data["entries"][key] = {"fp32 contiguous": "fast"}
    forms.CACHE.path.write_text(json.dumps(data))
    again = choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000)
    assert again.how == "timed" and again.layout == "channels_last" and len(asked) == 2
    assert choose(SPEC, TrainConfig(), "cpu", 2, n_train=1000).how == "cached"
