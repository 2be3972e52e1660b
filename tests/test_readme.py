"""The README's Python snippet runs as written (in a scratch folder, so its run directory lands there)."""

import os
import re

import pandas as pd

from conftest import ROOT


def test_readme_python_snippet_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    finally:
        os.chdir(cwd)
    assert namespace["cost"].flops == 992_629_472             # the count the snippet's comment shows
    result = namespace["result"]
    out = tmp_path / result.out
    assert result.best is not None and 0 < result.best["top1"] <= 1
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 1 and set(trials.state) == {"COMPLETE"} and trials.top1.between(0, 1).all()
    family = pd.read_csv(out / "family.csv").set_index("phi")
    assert list(family.index) == [0, 1, 2] and family.flops.is_monotonic_increasing
    # the model the snippet builds is the family's phi = 2 member
    assert sum(p.numel() for p in namespace["model"].parameters()) == family.loc[2, "params"]
