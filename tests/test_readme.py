"""The README's Python snippet runs as written (in a scratch folder, so its run directory lands there)."""

import os
import re

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
    assert result.best is not None and (tmp_path / result.out / "family.csv").is_file()
