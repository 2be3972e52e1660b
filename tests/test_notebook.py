"""The walk-through notebook runs top to bottom (a tiny grid, the family, Figure 8's rows counted,
the curves), so it never rots, and says the numbers it should."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import ROOT


def test_the_walkthrough_notebook_executes(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "walkthrough.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # Eq. 3 at phi = 1 on B0, counted: the base's golden FLOPs and the README's 992,629,472
    b0 = json.loads((ROOT / "tests" / "golden.json").read_text())["efficientnet-b0"]["flops"]
    assert f"({b0:,} -> 992,629,472 FLOPs)" in printed and "formula 1.920x" in printed
    # step 1: the one trained candidate learned; step 2: the family follows 2^phi
    runs = tmp_path / "runs"
    trials = pd.read_csv(runs / "notebook-grid" / "trials.csv")
    assert len(trials) == 1 and set(trials.state) == {"COMPLETE"} and trials.top1.between(0, 1).all()
    family = pd.read_csv(runs / "notebook-grid" / "family.csv")
    assert list(family.phi) == [0, 1, 2, 3, 4] and family.flops.is_monotonic_increasing
    assert list(family.target_ratio) == [2.0 ** phi for phi in range(5)]
    # Figure 8's 18 rows counted (B0's baseline at 224 px is the paper's 0.39 GFLOPs), nothing trained
    figure8 = pd.read_csv(runs / "notebook-figure8" / "figure8.csv").set_index("label")
    assert len(figure8) == 18 and (figure8.flops > 0).all() and "18 rows built and counted" in printed
    assert figure8.loc["baseline", "flops_paper_res"] == pytest.approx(0.386e9, rel=0.01)
    assert figure8.loc["baseline", "flops_ratio"] == 1.0
    assert (runs / "notebook-curves.png").stat().st_size > 10_000 and (runs / "notebook-curves.svg").is_file()
