"""The sections of docs/api.md not made from docstrings: the evaluate metric's own text and the command's help."""

from __future__ import annotations

import argparse
import ast
import os
import textwrap
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
METRIC_MODULE = REPO / "ferv39k_hf" / "metrics" / "war_uar" / "war_uar.py"
HELP_COLUMNS = "100"  # argparse wraps help to the terminal: fix the width so the text is the same everywhere


def _string_constant(path: Path, name: str) -> str:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(f"{path}: no string constant {name}")


def metric_section() -> List[str]:
    description = _string_constant(METRIC_MODULE, "_DESCRIPTION").strip()
    kwargs = _string_constant(METRIC_MODULE, "_KWARGS_DESCRIPTION").strip("\n")
    return [
        "## The `evaluate` metric", "",
        "`evaluate.load(ferv39k_hf.metrics.WAR_UAR)` loads the metric module shipped with the package, offline; "
        "it wraps `ferv39k_hf.metrics.score`. Its documentation, from "
        "`ferv39k_hf/metrics/war_uar/war_uar.py`:", "",
        " ".join(description.split()), "",
        "```text", *textwrap.dedent(kwargs).splitlines(), "```",
    ]


def cli_section() -> List[str]:
    from ferv39k_hf.cli import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        parser = build_parser()
        out = ["## Command line", "",
               "`ferv39k-hf` (or `python -m ferv39k_hf.cli`); each command's `--help` prints the text below.", "",
               "```text", *parser.format_help().rstrip().splitlines(), "```"]
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for command, sub in subparsers.choices.items():
            out += ["", f"### `ferv39k-hf {command}`", "", "```text", *sub.format_help().rstrip().splitlines(), "```"]
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return out
