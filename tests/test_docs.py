"""The documents stay true: docs/api.md is what docs/make_api.py prints, links resolve, commands match CI."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([REPO / "README.md", REPO / "examples" / "README.md",
                    REPO / "loading_script" / "ferv39k" / "README.md",
                    REPO / "ferv39k_hf" / "metrics" / "war_uar" / "README.md", *(REPO / "docs").glob("*.md")])


def _make_api():
    """docs/make_api.py as a module (registered, as its dataclasses need)."""
    if "ferv39k_docs_make_api" not in sys.modules:
        spec = importlib.util.spec_from_file_location("ferv39k_docs_make_api", REPO / "docs" / "make_api.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["ferv39k_docs_make_api"]


def test_api_md_is_what_make_api_prints():
    committed = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    generated = _make_api().render()
    if committed != generated:
        import difflib

        diff = "".join(list(difflib.unified_diff(committed.splitlines(True), generated.splitlines(True),
                                                 "docs/api.md", "generated", n=1))[:60])
        pytest.fail(f"docs/api.md is out of date: run python docs/make_api.py > docs/api.md\n{diff}")


def test_every_public_name_and_command_has_an_entry():
    make_api = _make_api()
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^###+ `([^`]+)`", text, flags=re.M))
    expected = {f"{module}.{name}" for module in make_api.COVERED_MODULES for name in make_api._module_all(module)}
    assert "ferv39k_hf.fused_kernel_available" in expected, "fused_kernel_available is exported"
    assert expected - headings == set()
    from ferv39k_hf.cli import build_parser

    commands = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices).choices
    assert {f"ferv39k-hf {command}" for command in commands} <= headings


def test_documented_examples_run():
    """Every ``>>>`` example in a documented docstring gives the output it shows."""
    make_api = _make_api()
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    seen: Set[int] = set()
    for dotted in make_api.documented_names():
        module_name, _, name = dotted.rpartition(".")
        obj = getattr(importlib.import_module(module_name), name)
        members = [obj] + ([m for m in vars(obj).values() if inspect.isfunction(m) or isinstance(m, property)]
                           if inspect.isclass(obj) else [])
        for member in members:
            target = member.fget if isinstance(member, property) else member
            if id(target) in seen or not (inspect.isfunction(target) or inspect.isclass(target)):
                continue
            seen.add(id(target))
            globs = dict(vars(inspect.getmodule(target)))
            for test in finder.find(target, name, globs=globs):
                runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted >= 10, "the documented names carry runnable examples"
    assert results.failed == 0


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(path: Path) -> str:
    """The document without its fenced code blocks (links there are code, not links)."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)


def _anchors(path: Path) -> Set[str]:
    anchors: Dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", _prose(path), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = anchors.get(slug, 0)
        anchors[slug] = count + 1
        if count:
            anchors[f"{slug}-{count}"] = 1
    return set(anchors)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files_and_headings(document: Path):
    broken: List[str] = []
    for target in _LINK.findall(_prose(document)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert broken == [], f"{document.relative_to(REPO)}: broken links"


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def test_readme_performance_figures_are_quoted_from_performance_md():
    """The README quotes headline figures; docs/performance.md is where they are measured and stated."""
    table = _section((REPO / "README.md").read_text(encoding="utf-8"), "Performance")
    performance = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    figures = re.findall(r"\d+(?:\.\d+)?(?:[–-]\d+(?:\.\d+)?)?(?:x|%)", table)
    assert len(figures) >= 3
    assert [figure for figure in figures if figure not in performance] == []


def test_readme_commands_are_the_ones_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    blocks = re.findall(r"^```bash\n(.*?)^```", readme, flags=re.M | re.S)
    quick_start = next(block for block in _section(readme, "Quick start (synthetic sample, fresh machine)").split("```")
                       if "ferv39k-hf sample" in block).removeprefix("bash\n").strip()
    assert "\n" not in quick_start, "the quick start is one line"
    # .ci/run runs that very line (twice, in a fresh copy), and its sample run for other environments too
    assert quick_start in ci.splitlines(), "the README's quick start is a line of .ci/run"
    assert re.search(r"^quick_start_run$", ci, flags=re.M) and "quick_start && quick_start" in ci
    sample_run = quick_start[quick_start.index("ferv39k-hf sample"):]
    assert sample_run in " ".join(ci.replace("\\\n", " ").split())
    # a light start: what the main job needs, nothing for the tests
    installs = [words.strip() for words in re.findall(r"pip install ([^&]+)", quick_start)]
    assert installs == ['-e ".[video]"'], installs
    tests = _section(readme, "Tests")
    assert 'pip install -e ".[train,video,dev]"' in tests and '-e ".[train,video,dev]"' in ci
    assert re.search(r"minutes", tests), "the Tests section says how long they take"
    assert any(block.strip() == "python -m pytest" for block in blocks)
    assert re.search(r"^python -m pytest$", ci, flags=re.M)


def test_the_quick_start_installs_nothing_for_the_tests():
    """The quick start's extras hold no test tool: no test server, pytest or scikit-learn."""
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick_start = next(line for line in readme.splitlines() if "ferv39k-hf sample demo" in line and "pip" in line)
    extras = re.search(r'pip install -e "\.\[([^\]]*)\]"', quick_start).group(1).split(",")
    requirements = [config["options"]["install_requires"]] + [config["options.extras_require"][e] for e in extras]
    names = {re.split(r"[<>=!\[ ;]", line.strip())[0].lower() for text in requirements for line in text.splitlines()
             if line.strip()}
    assert names and not names & {"pytest", "pytest-timeout", "scikit-learn", "moto", "flask", "docker", "boto3",
                                  "torch", "transformers"}


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_text(encoding="utf-8")) <= 9000
