"""The documentation holds together: links resolve, the README stays a front door, studies are indexed.

Pure file reads (plus one `git ls-files`), so it runs in well under a second.
"""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

README_MAX_LINES = 250
# [text](target) and ![alt](target); the target stops at whitespace or ')'
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.S | re.M)


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "experiments" / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted((ROOT / "experiments").glob("*/NOTES.md"))
    return files


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())          # a link inside a code block is not a link
    targets = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue                                    # http(s):, mailto:, or an anchor on the same page
        targets.append(target.split("#", 1)[0])
    return targets


def tracked(pattern: str) -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--", pattern], cwd=ROOT, capture_output=True, text=True,
                             check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.stdout.splitlines()


def test_the_documents_exist():
    names = {p.relative_to(ROOT).as_posix() for p in doc_files()}
    for name in ("docs/cli.md", "docs/method.md", "docs/faults.md", "docs/ray.md", "docs/architecture.md",
                 "docs/performance.md", "experiments/README.md"):
        assert name in names, name


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    links = relative_links(path)
    broken = [t for t in links if not (path.parent / t).exists()]
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"


def test_link_pattern_reads_what_it_should(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](x.md) ![b](img/p.png) [c](https://example.org) [d](#anchor) [e](y.md#part)\n"
                    "```\n[not a link](missing.md)\n```\n")
    assert relative_links(page) == ["x.md", "img/p.png", "y.md"]


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; reference material belongs in docs/"
    assert "## Python API" in lines                     # tests/test_readme.py runs the snippet under it


def test_no_code_cites_a_readme_heading():
    cited = []
    for path in sorted((ROOT / "scalesearch").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".yaml", ".yml", ".json", ".toml", ".cfg", ".txt", ".md"):
            text = path.read_text(errors="replace")
            for needle in ('README, "', "(README"):
                if needle in text:
                    cited.append(f"{path.relative_to(ROOT)}: {needle!r}")
    assert not cited, "cite a docs/ page or a study's NOTES.md by path instead: " + "; ".join(cited)


SCRIPT_FOLDERS = {"bench"}  # experiments/bench holds the benchmark scripts (make bench), not a study


def test_every_study_folder_is_indexed():
    index = (ROOT / "experiments" / "README.md").read_text()
    folders = {Path(f).parts[1] for f in tracked("experiments/") if len(Path(f).parts) > 2} - SCRIPT_FOLDERS
    assert folders, "no study folder is tracked under experiments/"
    for folder in sorted(folders):
        assert f"]({folder}/" in index, f"experiments/{folder}/ is not linked from experiments/README.md"
        assert (ROOT / "experiments" / folder / "NOTES.md").is_file(), f"experiments/{folder}/ has no NOTES.md"


def test_no_optuna_database_is_tracked():
    dbs = [f for f in tracked("experiments/") if Path(f).name == "study.db"]
    assert not dbs, f"study.db is not a record (trials.csv is); untrack: {dbs}"


def test_every_module_is_in_the_layout():
    """docs/architecture.md places every module of every package of scalesearch/ (a new one is placed)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "scalesearch"
    missing = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
               if p.name not in ("__init__.py", "__main__.py") and p.parent.name != "backends"
               and f"`{p.name}`" not in text]
    missing += [d.name for d in package.iterdir() if (d / "__init__.py").is_file() and f"`{d.name}/`" not in text]
    assert not missing, f"docs/architecture.md does not place: {missing}"

def test_experiments_hold_no_log_files():
    """A study's console output is kept as text named for what it is (output.txt), not as .log."""
    logs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments").rglob("*.log"))
    assert not logs, logs
