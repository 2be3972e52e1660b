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


def experiment_pages() -> list[Path]:
    """Every page under experiments/: the index, the NOTES, and the tables the runs wrote."""
    return sorted((ROOT / "experiments").rglob("*.md"))


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


@pytest.mark.parametrize("path", sorted(set(doc_files()) | set(experiment_pages())),
                         ids=lambda p: p.relative_to(ROOT).as_posix())
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


SCRIPT_FOLDERS = {"bench", "scripts"}  # benchmark scripts (make bench) and analysis scripts, not studies


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


def test_experiments_keep_scripts_apart_from_studies():
    """Scripts live in experiments/scripts/ or experiments/bench/, not loose beside the study folders."""
    loose = sorted(p.name for p in (ROOT / "experiments").iterdir()
                   if p.is_file() and p.suffix in (".py", ".sh"))
    assert not loose, f"experiments/ holds scripts beside the studies (move them to experiments/scripts/): {loose}"


def test_superseded_runs_are_out_of_the_tree():
    """A run a later one replaced lives in git history (experiments/README.md, "Superseded runs")."""
    folders = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "experiments").rglob("superseded") if p.is_dir())
    assert not folders, f"superseded runs belong in git history, not the tree: {folders}"
    assert "## Superseded runs" in (ROOT / "experiments" / "README.md").read_text()


MACHINE_PATHS = ("/tmp/", "/root/", "/home/")


def test_experiment_pages_name_no_machine_paths():
    """A study names RUN, DATA or ../shared/data/cifar10, not a folder of the machine it ran on."""
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in experiment_pages()
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if any(machine in line for machine in MACHINE_PATHS)]
    assert not found, "machine paths in experiments/ pages:\n" + "\n".join(found)


# A `scalesearch grid` / `scalesearch reproduce` command (python -m scalesearch too), or a shell
# variable that holds one (COMMON="grid --base ..." run as `scalesearch $COMMON`).
COMMAND = re.compile(r"(?:\bscalesearch\s+|^\s*[A-Z_]+=[\"']?)(grid|reproduce)(?=\s|$)")
COMMAND_ENDS = re.compile(r"\bscalesearch\s|&&|;|\|")          # the next command on the same line


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, line) with shell continuation lines (ending in a backslash) joined."""
    joined, start, parts = [], None, []
    for number, line in enumerate(text.splitlines(), 1):
        start = start or number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        joined.append((start, " ".join([*parts, line])))
        start, parts = None, []
    if parts:
        joined.append((start, " ".join(parts)))
    return joined


def removed_flags_given(line: str) -> list[str]:
    """The flags removed in 0.3.0 that `line` gives to grid or reproduce, as whole option words."""
    from scalesearch.cli.common import REMOVED_FLAGS

    found = []
    for command in COMMAND.finditer(line):
        rest = line[command.end():]
        end = COMMAND_ENDS.search(rest)
        options = rest[:end.start()] if end else rest
        found += [flag for flag in REMOVED_FLAGS if re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", options)]
    return found


def test_removed_flags_are_matched_as_whole_words():
    assert removed_flags_given("scalesearch grid --base r --steps 5 --seeds 3 --set train.lr_per_256=0.4") == []
    assert removed_flags_given("scalesearch grid --lr-per-256 0.4 --no-estimate --set seed=1") == []
    assert removed_flags_given("scalesearch grid --base r --step 0.05 --seed 1") == ["--step", "--seed"]
    assert removed_flags_given("python -m scalesearch reproduce figure8 --no-early-stop") == ["--no-early-stop"]
    assert removed_flags_given('COMMON="grid --base r --alpha-max 2') == ["--alpha-max"]
    assert removed_flags_given("scalesearch grid --base r && scalesearch flops --keep-maps --depth-rounding total") == []
    assert removed_flags_given("scalesearch family --phi-max 7 --tolerance 0.1") == []
    assert removed_flags_given("scalesearch gridlock --lr 1") == []
    assert logical_lines("a \\\n  b --lr 1\nc") == [(1, "a    b --lr 1"), (3, "c")]


def test_no_removed_flag_is_given_to_grid_or_reproduce():
    """The research flags removed from grid and reproduce in 0.3.0 (REMOVED_FLAGS, CHANGELOG.md) appear in no
    command a page tells a reader to run: each is spelled with --set. No page is exempt today; a kept copy of
    an old version's console output would be exempted here by file and line."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *experiment_pages()]
    found = [f"{path.relative_to(ROOT)}:{number}: {', '.join(flags)} in: {line.strip()[:160]}"
             for path in pages
             for number, line in logical_lines(path.read_text())
             if (flags := removed_flags_given(line))]
    assert not found, "removed flags given to grid/reproduce (write them as --set NAME=VALUE):\n" + "\n".join(found)
