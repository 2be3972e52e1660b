"""`scalesearch reproduce` and `scalesearch curves`: experiment files, the plan, a reproduction
run on the study machinery (resume, seeds, coefficients from a grid), the outputs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, snapshot as digest
from conftest import cli as command
from scalesearch.study.backends.fake import FakeBackend
from scalesearch.errors import UserError
from scalesearch.reproduce import (MATCH_TOLERANCE, ExperimentError, load_experiment, make_settings,
                                   parse_experiment, reproduce)

TINY = {
    "name": "tiny",
    "budgets": {"smoke": {"resolution": 32, "train_subset": 64, "val_subset": 32, "epochs": 1, "batch_size": 32,
                          "seeds": 2}},
    "search": {"target_flops": "2x", "alpha_max": 2.0, "beta_max": 1.5, "step": 0.25, "max_trials": 2,
               "order": "nearest"},
    "bases": {"resnet20-cifar": {"coefficients": "search", "rows": [
        {"method": "baseline", "paper_top1": 70.0},
        {"method": "width", "w": 1.5, "paper_top1": 72.0},
        {"method": "depth", "d": 2, "paper_top1": 71.0},
        {"method": "resolution", "r": 1.5, "paper_top1": 71.5},
        {"method": "compound", "match": "singles", "paper_top1": 73.0},
        {"method": "compound", "phi": 1},
    ]}},
}


def tiny_file(tmp_path: Path, **changes) -> Path:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def run(tmp_path, name="out", backend=None, **options):
    settings = make_settings(tiny_file(tmp_path), "smoke", out=str(tmp_path / name), **options)
    backend = backend or FakeBackend()
    return reproduce(settings, backend=backend, progress=False, estimate=False), backend


# -- experiment files --------------------------------------------------------------------------

def test_the_builtin_experiments_hold_the_papers_rows():
    table3, figure8 = load_experiment("table3"), load_experiment("figure8")
    assert table3.bases == ["mobilenetv1", "mobilenetv2", "resnet50"]
    assert len(table3.rows) == 14 and all(r.paper_top1 is not None for r in table3.rows)
    assert {(r.base, r.method) for r in table3.rows if r.method == "compound"} == {
        ("mobilenetv1", "compound"), ("mobilenetv2", "compound"), ("resnet50", "compound")}
    assert table3.coefficients == {"mobilenetv2": "search", "resnet50": "search"}
    paper = [r for r in figure8.rows if r.paper_top1 is not None]   # Table 7
    assert [(r.method, r.d, r.w, r.r, r.paper_top1) for r in paper] == [
        ("baseline", 1, 1, 1, 77.3), ("depth", 4, 1, 1, 79.0), ("width", 1, 2, 1, 78.9),
        ("resolution", 1, 1, 2, 79.1), ("compound", 1.4, 1.2, 1.3, 81.1)]
    for method in ("depth", "width", "resolution", "compound"):  # four curves, at least 4 points each
        assert sum(r.method == method for r in figure8.rows) >= 4
    # experiments/ holds the same files (links into the package, which ships them)
    assert (ROOT / "experiments" / "table3.yaml").read_text() == Path(table3.source).read_text()
    assert (ROOT / "experiments" / "figure8.yaml").read_text() == Path(figure8.source).read_text()


@pytest.mark.parametrize("change, named", [
    ({"bases": {"resnet-9000": {"rows": [{"method": "baseline"}]}}}, "resnet-9000"),
    ({"bases": {"resnet18": {}}}, "rows"),
    ({"bases": {"resnet18": {"rows": [{"method": "width", "w": 2}]}}}, "baseline"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"}, {"method": "width"}]}}}, "'w'"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"}, {"method": "stretch"}]}}}, "stretch"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"}, {"method": "width", "w": "two"}]}}}, "'two'"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"}, {"method": "width", "w": 2, "d": 2}]}}}, "only 'w'"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"}, {"method": "compound", "phi": 1}]}}},
     "coefficients"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline", "colour": 1}]}}}, "colour"),
    ({"bases": {"resnet18": {"coefficients": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}, "rows": [
        {"method": "baseline"}, {"method": "compound", "match": "everything"}]}}}, "'singles' or 'paper'"),
    ({"budgets": {"smoke": {"epochs": 1}}}, "resolution"),
    ({"budgets": {"smoke": {"resolution": 32, "dataset": 7}}}, r"budgets.smoke.dataset must be a data set"),
    ({"train": {"lr": -1}}, "lr"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"}, {"method": "strategy", "s": 2}]}}}, "needs 'strategy'"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"},
                                      {"method": "strategy", "strategy": "dWr", "s": 2, "match": "flops"}]}}},
     "one of 's'"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"},
                                      {"method": "strategy", "strategy": "dWr", "match": "speed"}]}}},
     "'flops' or 'latency'"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"}, {"method": "strategy", "strategy": "fast", "s": 2}]}}},
     r"rows\[1\]: strategy must be one of dWr"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"}, {"method": "strategy", "strategy": "dWr", "s": 0.5}]}}},
     r"rows\[1\].s"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"},
                                      {"method": "strategy", "strategy": "dWr", "s": 2, "w": 2}]}}}, "and no w"),
    ({"bases": {"resnet18": {"rows": [{"method": "baseline"}, {"method": "width", "w": 2, "s": 2}]}}},
     "belong to rows with method: strategy"),
])
def test_a_bad_experiment_is_named(change, named):
    with pytest.raises(ExperimentError, match=named):
        parse_experiment({**TINY, **change}, "x.yaml")
    missing = dict(TINY)
    del missing["bases"]
    with pytest.raises(ExperimentError, match="'bases' is missing"):
        parse_experiment(missing, "x.yaml")


def test_a_strategy_row_is_split_from_its_flops_factor_and_named_by_it():
    """pycls's dWr (shares 1:8:1) and uniform scaling as rows, beside the paper's kinds."""
    rows = [{"method": "baseline"}, {"method": "strategy", "strategy": "dWr", "s": 4},
            {"method": "strategy", "strategy": "uniform", "s": 8, "paper_top1": 71.0}]
    experiment = parse_experiment({**TINY, "bases": {"resnet18": {"rows": rows}}}, "x.yaml")
    _, dwr, uniform = experiment.rows
    assert (dwr.method, dwr.strategy, dwr.s, dwr.label) == ("strategy", "dWr", 4.0, "dWr s=4")
    assert (dwr.d, dwr.w, dwr.r) == pytest.approx((4 ** 0.1, 4 ** 0.4, 4 ** 0.05))
    assert (uniform.d, uniform.w, uniform.r, uniform.paper_top1) == pytest.approx((2.0, 2 ** 0.5, 2 ** 0.5, 71.0))


def test_a_strategy_row_matched_to_the_compound_rows_flops_or_latency(tmp_path):
    """``match: flops`` fits s so the row's measured FLOPs meet the compound row's, ``match:
    latency`` so its latency does (timed as tests/conftest.py's cost_latency stands in)."""
    from scalesearch.measure.latency import measure_latency
    from scalesearch.reproduce.plan import plan

    rows = [{"method": "baseline"}, {"method": "compound", "d": 1.4, "w": 1.2, "r": 1.3},
            {"method": "strategy", "strategy": "dWr", "match": "flops"},
            {"method": "strategy", "strategy": "d", "match": "latency"}]
    settings = make_settings(tiny_file(tmp_path, bases={"resnet20-cifar": {"rows": rows}}), "smoke",
                             out=str(tmp_path / "out"))
    _, compound, by_flops, by_latency = plan(settings, 10)
    assert (by_flops.row.label, by_latency.row.label) == ("dWr (matched flops)", "d (matched latency)")
    assert by_flops.flops == pytest.approx(compound.flops, rel=0.05) and by_flops.w > by_flops.d > 1
    assert "matched to the compound row's flops" in by_flops.note
    ms = [measure_latency(m.spec, threads=1).median_ms for m in (compound, by_latency)]
    assert ms[1] == pytest.approx(ms[0], rel=0.05) and by_latency.w == by_latency.r == 1 < by_latency.d
    assert "matched to the compound row's latency" in by_latency.note and "ms at batch 1" in by_latency.note
    lonely = [{"method": "baseline"}, {"method": "strategy", "strategy": "dWr", "match": "latency"}]
    with pytest.raises(ExperimentError, match="needs a compound row to match"):
        plan(make_settings(tiny_file(tmp_path, bases={"resnet20-cifar": {"rows": lonely}}), "smoke",
                           out=str(tmp_path / "lonely")), 10)


# -- a reproduction on the study machinery (a backend that trains nothing) ---------------------

def test_reproduce_searches_coefficients_matches_flops_and_writes_everything(tmp_path):
    result, backend = run(tmp_path)
    out = result.out
    # compound coefficients came from a phi = 1 grid search at the same proxy, in OUT/grid-BASE
    best = json.loads((out / "grid-resnet20-cifar" / "best.json").read_text())
    models = {m.row.label: m for m in result.models}
    singles = [models[k].flops for k in ("width w=1.5", "depth d=2", "resolution r=1.5")]
    matched = models["compound (matched FLOPs)"]
    assert abs(matched.flops / (sum(singles) / 3) - 1) <= MATCH_TOLERANCE
    assert f"alpha={best['alpha']:g}" in matched.coefficients and "grid run" in matched.coefficients
    assert matched.d == pytest.approx(best["alpha"] ** matched.phi) and matched.w == pytest.approx(
        best["beta"] ** matched.phi)
    phi1 = models["compound phi=1"]
    assert phi1.d == pytest.approx(best["alpha"]) and abs(phi1.flops_ratio / 2 - 1) < 0.15
    # the grid's 2 candidates x 2 seeds, then every row x seed once: the paper's rows first, seed-major
    assert len(backend.ran) == 4 + 12
    assert backend.ran[4:] == [f"c{i}-s{k}" for k in (0, 1) for i in range(5)] + ["c5-s0", "c5-s1"]
    table = pd.read_csv(out / "tiny.csv")
    assert (table.kind == "trial").sum() == 12 and (table.kind == "summary").sum() == 6
    summary = table[table.kind == "summary"].set_index("label")
    assert list(summary.columns[:3]) == ["kind", "model", "base"]
    for column in ("d", "w", "r", "resolution", "params", "flops", "flops_ratio", "paper_flops", "paper_top1",
                   "top1_mean", "top1_std", "seeds"):
        assert column in summary.columns
    assert summary.loc["width w=1.5", "seeds"] == "0 1" and summary.loc["baseline", "paper_top1"] == 70.0
    md = (out / "tiny.md").read_text()
    assert "| width w=1.5 |" in md and "resnet20-cifar: compound" in md and "seed-to-seed" in md
    for name in ("tiny.png", "tiny.svg", "models.csv", "trials.csv", "config.json"):
        assert (out / name).is_file()
    again, backend2 = run(tmp_path)
    assert backend2.ran == [] and len(again.rows) == 12
    more, backend3 = run(tmp_path, seeds=3)                     # --seeds extends the same run
    assert sorted(backend3.ran) == sorted(f"c{i}-s2" for i in range(6))  # the search found its answer: kept
    assert [m.flops for m in more.models] == [m.flops for m in result.models]


def test_the_verdict_compares_compound_with_each_single_row(tmp_path):
    def score(trial):  # compound (models 4, 5) clearly best, every other row equal, tiny seed noise
        return (0.8 if trial.candidate >= 4 else 0.5) + 0.001 * trial.seed

    result, _ = run(tmp_path, backend=FakeBackend(score=score))
    (found,) = result.verdicts
    assert found.compound == 4 and len(found.against) == 3
    assert all(v.separable and v.gap == pytest.approx(0.3) for _, v in found.against)
    assert "compound beat every single-dimension row" in found.text
    result2, _ = run(tmp_path, "other", backend=FakeBackend(score=lambda t: 0.5 + 0.05 * (t.seed % 2)))
    assert "did not beat every single-dimension row beyond the noise" in result2.verdicts[0].text

    def worse(trial):  # compound clearly behind every single row: a separable loss, not noise
        return (0.3 if trial.candidate >= 4 else 0.5) + 0.001 * trial.seed

    result3, _ = run(tmp_path, "worse", backend=FakeBackend(score=worse))
    assert all(v.separable and v.gap == pytest.approx(-0.2) for _, v in result3.verdicts[0].against)
    assert "compound lost to every single-dimension row by more than twice the seed spread" in result3.verdicts[0].text


def test_the_verdict_compares_compound_with_a_strategy_row_too(tmp_path):
    """A dWr row sits beside the single-dimension rows in the compound row's verdict."""
    rows = TINY["bases"]["resnet20-cifar"]["rows"] + [{"method": "strategy", "strategy": "dWr", "s": 2}]
    bases = {"resnet20-cifar": {"coefficients": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}, "rows": rows}}
    settings = make_settings(tiny_file(tmp_path, bases=bases), "smoke", out=str(tmp_path / "out"))
    strategy = len(rows) - 1                                            # models are numbered by row

    def score(trial):  # the dWr row clearly best, every other row equal
        return (0.8 if trial.candidate == strategy else 0.5) + 0.001 * trial.seed

    result = reproduce(settings, backend=FakeBackend(score=score), progress=False, estimate=False)
    assert result.models[strategy].row.label == "dWr s=2"
    (found,) = result.verdicts
    assert len(found.against) == 4 and dict(found.against)[strategy].gap == pytest.approx(-0.3)
    assert "compound did not beat every single-dimension or strategy row beyond the noise" in found.text
    assert "dWr s=2 -30.00" in found.text


def test_each_row_is_compared_with_the_baseline_in_the_table_and_the_csv(tmp_path):
    """What scaling bought: every healthy row against its base's baseline, by the ranking's rule
    (separable beyond twice the spread), in NAME.md's table and NAME.csv's summary rows."""
    def score(trial):  # width (model 1) clearly above the baseline; depth (2) level with it
        return {1: 0.7, 2: 0.505}.get(trial.candidate, 0.5) + 0.002 * trial.seed

    result, _ = run(tmp_path, backend=FakeBackend(score=score))
    summary = pd.read_csv(result.out / "tiny.csv").query("kind == 'summary'").set_index("model")
    assert summary.loc[1, "gain_vs_baseline"] == pytest.approx(20.0) and summary.loc[1, "gain_separable"]
    assert summary.loc[2, "gain_vs_baseline"] == pytest.approx(0.5) and not summary.loc[2, "gain_separable"]
    assert pd.isna(summary.loc[0, "gain_vs_baseline"])          # the baseline itself
    md = (result.out / "tiny.md").read_text()
    assert "| vs baseline (points) |" in md and "| +20.00 (separable, spread " in md and "| +0.50 (noise, spread " in md
    assert "| 50.10 +/- 0.14 | 50.0, 50.2 |" in md and "| paper top-1 (%) |" in md  # each seed, and the paper's
    # an experiment of its own (no paper figures): no paper columns; the recipe says what differs
    bases = {"resnet20-cifar": {"rows": [{"method": "baseline"}, {"method": "depth", "d": 2}]}}
    settings = make_settings(tiny_file(tmp_path, bases=bases), "smoke", out=str(tmp_path / "own"),
                             recipe={"residual_init": "scaled"})
    own = reproduce(settings, backend=FakeBackend(score=score), progress=False, estimate=False)
    md = (own.out / "tiny.md").read_text()
    assert "paper" not in md and "| per seed (%) | vs baseline (points) |" in md
    assert "Recipe: the defaults (docs/cli.md) but residual_init scaled." in md


def test_a_budget_names_its_data_set_and_dataset_replaces_it(tmp_path):
    budgets = {"smoke": {**TINY["budgets"]["smoke"], "dataset": "synthetic:hard"}}
    path = tiny_file(tmp_path, budgets=budgets)
    assert make_settings(path, "smoke").data.dataset == "synthetic:hard"
    assert make_settings(path, "smoke", dataset="synthetic").data.dataset == "synthetic"
    assert make_settings(tiny_file(tmp_path), "smoke").data.dataset == "synthetic"


def test_a_row_matched_to_the_paper_rows_gets_its_own_verdict(tmp_path):
    """Figure 8's shape: the paper's compound row (dearer at a small proxy) and a compound row
    matched to the FLOPs of the single rows that carry the paper's figures, each compared."""
    rows = [{"method": "baseline", "paper_top1": 70.0},
            {"method": "width", "w": 1.5, "paper_top1": 72.0},
            {"method": "resolution", "r": 1.5, "paper_top1": 71.5},
            {"method": "compound", "d": 1.5, "w": 1.3, "r": 1.3, "paper_top1": 73.0},
            {"method": "compound", "match": "paper"},
            {"method": "width", "w": 1.1},                      # no paper figures: not matched
            {"method": "compound", "phi": 1}]
    bases = {"resnet20-cifar": {"coefficients": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}, "rows": rows}}
    settings = make_settings(tiny_file(tmp_path, bases=bases), "smoke", out=str(tmp_path / "out"))
    result = reproduce(settings, backend=FakeBackend(), progress=False, estimate=False)
    models = {m.row.label: m for m in result.models}
    matched = models["compound (matched FLOPs)"]
    paper_singles = [models["width w=1.5"].flops, models["resolution r=1.5"].flops]
    assert abs(matched.flops / (sum(paper_singles) / 2) - 1) <= MATCH_TOLERANCE
    assert [v.compound for v in result.verdicts] == [3, 4]      # the paper's row, then the matched one
    assert all(len(v.against) == 2 for v in result.verdicts)
    md = (result.out / "tiny.md").read_text()
    assert "resnet20-cifar (compound d=1.5 w=1.3 r=1.3):" in md and "resnet20-cifar (compound (matched FLOPs)):" in md


def test_a_diverged_row_is_shown_but_never_compared(tmp_path):
    result, _ = run(tmp_path, backend=FakeBackend(diverge={"c4-s0"}))
    assert "did not train healthily" in result.verdicts[0].text
    summary = pd.read_csv(result.out / "tiny.csv").query("kind == 'summary'").set_index("model")
    assert summary.loc[4, "state"] == "DIVERGED" and summary.loc[4, "top1_mean"] > 0


def test_coefficients_from_a_finished_grid_run_skip_the_search(tmp_path):
    first, _ = run(tmp_path)
    grid_run = first.out / "grid-resnet20-cifar"
    second, backend = run(tmp_path, "second", coefficients=[str(grid_run)])
    assert not (second.out / "grid-resnet20-cifar").exists() and len(backend.ran) == 12   # no grid trials
    assert [m.flops for m in second.models] == [m.flops for m in first.models]
    with pytest.raises(UserError, match="not a grid run directory"):
        run(tmp_path, "third", coefficients=[str(tmp_path)])


def test_another_reproduction_in_the_same_folder_is_refused(tmp_path):
    run(tmp_path)
    before = digest(tmp_path / "out")
    with pytest.raises(UserError, match=r"different reproduction \(seed = 0 there, 5 here\)"):
        settings = make_settings(tiny_file(tmp_path, seed=5), "smoke", out=str(tmp_path / "out"))
        reproduce(settings, backend=FakeBackend(), progress=False, estimate=False)
    with pytest.raises(UserError, match="dry run would replace"):
        reproduce(make_settings(tiny_file(tmp_path), "smoke", out=str(tmp_path / "out")), dry_run=True,
                  backend=FakeBackend(), progress=False, estimate=False)
    assert digest(tmp_path / "out") == before


def test_a_run_from_before_a_recipe_field_existed_still_resumes(tmp_path):
    """A reproduction written before 'optimizer' and 'trust' joined the recipe holds their
    defaults: resuming it is not refused as a different reproduction; a real change is."""
    from types import SimpleNamespace

    from scalesearch.reproduce import check_same_reproduction as check

    settings = make_settings(tiny_file(tmp_path), "smoke", out=str(tmp_path / "out"))
    identity = json.loads(json.dumps(settings.identity(), default=str))
    del identity["train"]["optimizer"], identity["train"]["trust"]
    old = SimpleNamespace(path=tmp_path / "out", read_config=lambda: {"kind": "reproduce", "identity": identity})
    check(old, settings)
    with pytest.raises(UserError, match=r"different reproduction \(train.optimizer = 'sgd' there, 'lars' here\)"):
        check(old, make_settings(tiny_file(tmp_path), "smoke", optimizer="lars"))


# -- the command line --------------------------------------------------------------------------

def cli(*args):
    result = command(*args)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args, named", [
    (["reproduce", "table9"], "unknown experiment 'table9'"),
    (["reproduce"], "name an experiment"),
    (["reproduce", "figure8", "--budget", "huge"], "--budget 'huge' is not a preset"),
    (["reproduce", "figure8", "--seeds", "0"], "--seeds"),
    (["reproduce", "figure8", "--backend", "slurm"], "backend"),
    (["reproduce", "figure8", "--set", "train.optimizer=adam"], "train setting 'optimizer' must be one of sgd, lars"),
    (["reproduce", "figure8", "--set", "train.residual_init=half"], "train setting 'residual_init' must be one of one, zero, scaled"),
    (["reproduce", "--config", "{tmp}/nothing.yaml"], "does not exist"),
    (["reproduce", "--config", "{tmp}/bad.yaml"], "bases.resnet-9000"),
    (["reproduce", "--config", "{tmp}/norows.yaml"], "'rows' is missing"),
    (["curves", "{tmp}", "--out", "{tmp}/c.png"], "holds no results"),
    (["curves", "{tmp}/none", "--out", "{tmp}/c.png"], "does not exist"),
])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, args, named):
    import yaml

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**TINY, "bases": {"resnet-9000": {"rows": []}}}))
    (tmp_path / "norows.yaml").write_text(yaml.safe_dump({**TINY, "bases": {"resnet18": {}}}))
    before = digest(tmp_path)
    code, stdout, stderr = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2 and named in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stdout + stderr
    assert digest(tmp_path) == before


def test_the_optimizer_option_replaces_the_experiments_and_reaches_the_search(tmp_path):
    assert make_settings(tiny_file(tmp_path), "smoke").train.optimizer == "sgd"
    assert make_settings(tiny_file(tmp_path, train={"optimizer": "lars"}), "smoke").train.optimizer == "lars"
    settings = make_settings(tiny_file(tmp_path, train={"optimizer": "lars", "trust": 0.05}), "smoke",
                             optimizer="sgd")
    assert (settings.train.optimizer, settings.train.trust) == ("sgd", 0.05)
    assert make_settings(tiny_file(tmp_path, train={"residual_init": "zero"}), "smoke",
                         residual_init="scaled").train.residual_init == "scaled"
    result, _ = run(tmp_path, optimizer="lars")
    assert json.loads((result.out / "config.json").read_text())["settings"]["train"]["optimizer"] == "lars"
    grid = json.loads((result.out / "grid-resnet20-cifar" / "config.json").read_text())["settings"]["train"]
    assert grid["optimizer"] == "lars"   # the phi = 1 search trains with the same recipe as the rows


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dry")
    outs = {}
    for name in ("table3", "figure8"):
        code, stdout, stderr = cli("reproduce", name, "--dry-run", "--out", folder / name)
        assert code == 0, stderr
        outs[name] = (pd.read_csv(folder / name / f"{name}.csv"), stdout)
    return outs


def test_dry_runs_count_every_paper_row_beside_the_papers_flops(dry_runs):
    table3, stdout = dry_runs["table3"]
    assert len(table3) == 14 and "dry run" in stdout
    rows = table3.set_index(["base", "label"])
    # at the paper's 224 px our counter agrees with the paper's FLOPs within 12% for every counted row
    counted = table3.dropna(subset=["flops_paper_res"])
    assert len(counted) == 12
    assert ((counted.flops_paper_res / counted.paper_flops - 1).abs() < 0.12).all()
    assert rows.loc[("resnet50", "baseline"), "flops_paper_res"] == pytest.approx(4.09e9, rel=0.01)
    assert rows.loc[("resnet50", "baseline"), "flops"] == 83_435_520  # at the 32 px proxy, 12 classes
    # rows whose coefficients come from a search show the FLOPs they will be fitted to
    matched = rows.loc[("mobilenetv2", "compound (matched FLOPs)")]
    singles = table3[(table3.base == "mobilenetv2") & table3.method.isin(["depth", "width", "resolution"])]
    assert matched.flops == pytest.approx(singles.flops.mean(), rel=1e-6) and "grid search" in matched.note
    figure8, _ = dry_runs["figure8"]
    assert len(figure8) == 18 and figure8.flops.notna().all()
    b0 = figure8.set_index("label")
    # Table 7's compound model at the FLOPs of its three single rows: at 32 px one pixel more
    # doubles B0's cost, so the phi walk goes well below log2 of the ratio to land within 5%
    paper_singles = b0.loc[["depth d=4", "width w=2", "resolution r=2"], "flops"].mean()
    assert abs(b0.loc["compound (matched FLOPs)", "flops"] / paper_singles - 1) <= MATCH_TOLERANCE
    assert b0.loc["compound (matched FLOPs)", "phi"] < 1
    assert b0.loc["baseline", "flops_paper_res"] == pytest.approx(0.386e9, rel=0.01)
    assert b0.loc["compound d=1.4 w=1.2 r=1.3", "flops_paper_res"] == pytest.approx(1.8e9, rel=0.01)
    assert b0.loc["compound phi=1", "d"] == pytest.approx(1.2) and b0.loc["compound phi=2", "w"] == pytest.approx(1.21)


# -- curves ------------------------------------------------------------------------------------

def test_curves_puts_grid_runs_and_a_reproduction_on_one_plot(tmp_path):
    from scalesearch.report.curves import load_series
    from scalesearch.search.grid import run_grid
    from scalesearch.settings import build_settings

    for name, beta_max, data in (("gridA", 1.3, "synthetic"), ("gridB", 1.5, "synthetic"),
                                 ("gridC", 1.3, "synthetic:hard")):
        flags = dict(base="resnet20-cifar", train_subset=64, val_subset=32, alpha_max=1.6, beta_max=beta_max,
                     step=0.1, phi_max=2, max_trials=3, out=str(tmp_path / name), dataset=data)
        run_grid(build_settings({}, flags), backend=FakeBackend(), progress=False, estimate=False)
    result, _ = run(tmp_path, "repro")
    labels = [s.label for p in ("gridA", "gridB", "repro") for s in load_series(tmp_path / p)]
    assert labels[:2] == ["gridA (grid)", "gridB (grid)"]
    assert set(labels[2:]) == {"repro: width", "repro: depth", "repro: resolution", "repro: compound"}
    compound = [s for s in load_series(tmp_path / "repro") if s.label.endswith("compound")][0]
    assert compound.points[0].flops == result.models[0].flops        # every curve starts at the baseline
    # CSV files work as well as folders
    assert [s.label for s in load_series(tmp_path / "repro" / "tiny.csv")] == labels[2:]
    assert len(load_series(tmp_path / "gridA" / "trials.csv")[0].points) == 3
    code, stdout, stderr = cli("curves", tmp_path / "gridA", tmp_path / "gridB", tmp_path / "repro",
                               "--out", tmp_path / "all.png")
    assert code == 0, stderr
    assert (tmp_path / "all.png").stat().st_size > 10_000 and (tmp_path / "all.svg").is_file()
    assert "different data sets" not in stdout
    code, stdout, _ = cli("curves", tmp_path / "gridA", tmp_path / "gridC", "--out", tmp_path / "mixed.png")
    assert code == 0 and f"warning: these results come from different data sets ({tmp_path / 'gridA'}: synthetic; " \
        f"{tmp_path / 'gridC'}: synthetic:hard): their top-1 are not comparable with each other" in stdout
    code, _, stderr = cli("curves", tmp_path / "gridA", "--out", tmp_path / "all.png")
    assert code == 2 and "exists" in stderr                           # never overwritten

def test_a_reproduction_trains_every_row_through_the_command(tmp_path, colours):
    """End to end: `scalesearch reproduce --config FILE` (in this process) trains every row with
    the Optuna backend on a tiny budget (the colour images at 16 px), and writes the table, the
    report and the figure.  (Figure 8's and Table 3's own rows: the dry runs above.)"""
    import yaml

    from scalesearch.net.bases import get_base
    from scalesearch.measure.cost import count_cost

    data, _ = colours
    cache = tmp_path / "cache"  # not the tiny search's: tests/test_faults_files.py damages what that one holds
    rows = [{"method": "baseline"}, {"method": "width", "w": 1.5}, {"method": "depth", "d": 2},
            {"method": "resolution", "r": 1.5}, {"method": "compound", "phi": 1}]
    experiment = {"name": "tiny", "budgets": {"smoke": {"resolution": 16, "train_subset": 48, "val_subset": 24,
                                                        "epochs": 1, "batch_size": 16, "seeds": 1}},
                  "bases": {"resnet20-cifar": {"coefficients": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15},
                                               "rows": rows}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(experiment))
    out = tmp_path / "out"
    code, stdout, stderr = cli("reproduce", "--config", path, "--dataset", data, "--set", f"data.cache_dir={cache}",
                               "--out", out, "--no-estimate")
    assert code == 0, stderr[-3000:]
    assert "written to" in stdout and "Traceback" not in stdout + stderr
    table = pd.read_csv(out / "tiny.csv")
    summary, trials = table.query("kind == 'summary'"), table.query("kind == 'trial'")
    assert len(summary) == len(rows) and len(trials) == len(rows)           # every row, one seed each
    assert trials.top1.notna().all() and trials.top1.between(0, 100).all()   # per cent, as the paper gives it
    baseline = get_base("resnet20-cifar").replace(num_classes=3, resolution=16)  # the colours' 3 classes
    assert summary.set_index("label").loc["baseline", "flops"] == count_cost(baseline).flops
    assert (summary.flops_ratio.iloc[1:] > 1).all()
    assert (out / "tiny.md").is_file() and (out / "tiny.png").stat().st_size > 10_000 and (out / "tiny.svg").is_file()


def test_a_panel_with_nothing_trained_is_drawn_without_a_warning(tmp_path):
    import warnings

    from scalesearch.report.curves import Point, Series
    from scalesearch.report.plots import draw_curves

    panels = {"untrained": [Series("width", [Point(1e6, None), Point(2e6, None)])],
              "at chance": [Series("depth", [Point(1e6, 10.0, diverged=True)])]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # matplotlib's empty-legend warning would raise
        paths = draw_curves(panels, tmp_path / "empty")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 0 for p in paths)
    svg = (tmp_path / "empty.svg").read_text()
    assert "no trained point yet" in svg and "1 point(s) at chance" in svg


def test_every_row_diverged_is_a_failed_run_as_in_grid(tmp_path):
    """grid exits 2 when no candidate trained healthily; reproduce once exited 0 with only
    'no comparison' lines.  The report is still written, and the error points at it."""
    bases = {"resnet20-cifar": {"coefficients": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15},
                                "rows": TINY["bases"]["resnet20-cifar"]["rows"][:-2]}}
    settings = make_settings(tiny_file(tmp_path, bases=bases), "smoke", out=str(tmp_path / "out"))
    everything = {f"c{c}-s{s}" for c in range(10) for s in range(3)}
    with pytest.raises(UserError, match=r"no row trained healthily in .*out \(all 8 trials diverged, were pruned or "
                                        r"failed: see tiny.md and trials.csv\)"):
        reproduce(settings, backend=FakeBackend(diverge=everything), progress=False, estimate=False)
    assert "DIVERGED (2 of 2 seeds)" in (tmp_path / "out" / "tiny.md").read_text()


def test_an_interrupted_reproduction_says_which_rows_are_not_trained_yet(tmp_path):
    """Rows a stopped run never reached are waiting, not failed (the report once said 'did not
    train healthily' of them)."""
    bases = {"resnet20-cifar": {"coefficients": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15},
                                "rows": TINY["bases"]["resnet20-cifar"]["rows"]}}
    settings = make_settings(tiny_file(tmp_path, bases=bases), "smoke", out=str(tmp_path / "out"))
    with pytest.raises(KeyboardInterrupt):  # after baseline, width, depth (seed 0)
        reproduce(settings, backend=FakeBackend(stop_after=3), progress=False, estimate=False)
    md = (tmp_path / "out" / "tiny.md").read_text()
    assert "not trained yet: 2 of 4 rows of this comparison (re-run the same command to resume)" in md, md
    assert "did not train healthily" not in md
    result = reproduce(settings, backend=FakeBackend(), progress=False, estimate=False)
    assert "not trained yet" not in (result.out / "tiny.md").read_text()


def test_a_diverged_baseline_shared_by_every_curve_counts_once():
    from scalesearch.report.curves import Point, Series
    from scalesearch.report.plots import hollow_points

    baseline = Point(1e6, 10.0, diverged=True)
    series = [Series(name, [baseline, Point(2e6, 40.0)]) for name in ("width", "depth", "resolution", "compound")]
    assert hollow_points(series) == {(1e6, 10.0)}


def test_a_dry_run_times_only_the_cheapest_row_so_an_absurd_row_cannot_hang_it(tmp_path):
    """A depth of 1000 (3,000 layers) is built and counted, not stepped: the estimate scales the
    cheapest row's time per image by FLOPs, about a thousand times the baseline's here."""
    experiment = tmp_path / "deep.yaml"
    experiment.write_text("name: deep\ntitle: a very deep row\nseed: 0\nbudgets:\n  smoke: {resolution: 16, "
                          "train_subset: 48, val_subset: 24, epochs: 1, batch_size: 16, seeds: 1}\nbases:\n"
                          "  resnet20-cifar:\n    rows:\n      - {method: baseline}\n      - {method: depth, d: 1000}\n")
    done = command("reproduce", "--config", experiment, "--budget", "smoke", "--dry-run", "--out", tmp_path / "run")
    assert done.exit_code == 0, done.output
    assert "depth d=1000" in done.output and "estimated" in done.output
