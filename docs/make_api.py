"""Write docs/api.md from the docstrings and signatures of the package's public names.

    python docs/make_api.py > docs/api.md      # regenerate after changing a public name
    python docs/make_api.py --check            # exit 1 when docs/api.md is out of date

Each entry is the name's signature (``inspect.signature``) and its docstring, so
the code is the one source of the API reference; tests/test_docs.py fails when
the committed docs/api.md differs from what this script prints. To document a
new public name, add it to a section of ``SECTIONS`` (a name of
``ferv39k_hf.__all__`` or ``ferv39k_hf.metrics.__all__`` that no section lists
still appears, under "Other public names", so nothing public goes missing).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.util
import inspect
import pprint
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # docstring_markdown and api_text_sections, beside it
from api_text_sections import cli_section, metric_section  # noqa: E402
from docstring_markdown import docstring_markdown, inline  # noqa: E402

API_MD = REPO / "docs" / "api.md"


@dataclasses.dataclass
class Section:
    """A heading of api.md and the public names under it, each ``module:name`` or ``name`` of ``module``."""

    title: str
    module: str
    names: Sequence[str] = ()
    intro: str = ""
    all_of_module: bool = False  # document every name of the module's __all__ (after ``names``)


SECTIONS: List[Section] = [
    Section(
        "Reading an archive", "ferv39k_hf",
        ["load", "Ferv39k", "Ferv39kConfig", "find_layout", "ClipRecord"],
        "`ferv39k_hf.load(root)` reads a hand-downloaded archive into a `DatasetDict`; `ferv39k-hf build` "
        "(see [Command line](#command-line)) writes the same rows as a Parquet folder.",
    ),
    Section(
        "Clips for training", "ferv39k_hf",
        ["undecoded_frames", "VideoClipTransform", "collate_clips", "DeviceFinish", "fused_kernel_available"],
        "Dataset rows to `pixel_values` batches for VideoMAE and TimeSformer, decoding only the sampled frames.",
    ),
    Section(
        "The dataset's facts", "ferv39k_hf",
        ["CLASS_WORDS", "DFEW_ORDER", "SCENES", "SCENARIOS", "SCENE_TO_SCENARIO", "label_names"],
    ),
    Section(
        "Official counts", "ferv39k_hf.taxonomy",
        ["OFFICIAL_TOTAL", "OFFICIAL_SPLIT_TOTALS", "official_counts", "FRAMES_PER_CLIP"],
        "The published counts, written once here; every document refers to them.",
    ),
    Section(
        "Frame samplers and codebase presets", "ferv39k_hf.clips.sampling",
        ["sample_indices", "sample_views", "segment_indices", "window_indices", "dfer_clip_indices",
         "mae_dfer_indices", "mae_dfer_views"],
        "Which frames of a clip to use (numpy only). `dfer-clip` and `mae-dfer` reproduce those codebases' "
        "loaders index for index ([sampling.md](sampling.md)).",
    ),
    Section(
        "Clip presets", "ferv39k_hf.clips.presets", ["ClipPreset", "get_preset"],
        "The rest of a codebase's clip protocol: input size, test views, crop, rotation, flip, normalisation.",
    ),
    Section(
        "Split lists of other codebases", "ferv39k_hf.archive.lists",
        ["detect_format", "parse_list_text", "open_lists", "ferv39k_hf.archive.listwriter:write_lists"],
        "Official, DFER-CLIP, MAE-DFER and S2D lists, read and written ([split-lists.md](split-lists.md)).",
    ),
    Section(
        "Streaming", "ferv39k_hf.dataset.streaming",
        ["stream", "read_card", "card_row_counts", "is_remote", "storage_options_for",
         "ferv39k_hf.dataset.storage:StoragePatience"],
        "A built folder, local or behind an fsspec URL, as an IterableDataset split by node "
        "([scale-out.md](scale-out.md)).",
    ),
    Section(
        "Training", "ferv39k_hf.training",
        ["ClipViewTrainer", "ClipCollator", "ClipScorer", "write_predictions", "evaluate_stream", "build_model",
         "processor_settings", "clip_protocol", "checkpoint_image_processor", "write_checkpoint_files",
         "push_checkpoint", "RunSummary", "save_evaluation", "plot_training", "set_aside_earlier_run",
         "mark_written", "check_one_world", "load_clips", "load_streams", "parse_test_views"],
        "What a Trainer script imports ([training.md](training.md)); the example is arguments plus `main` over these.",
    ),
    Section(
        "Streamed loaders", "ferv39k_hf.training.streamloader",
        ["steps_per_epoch", "StreamCollator", "StreamLoader", "gather_across_ranks", "lockstep"],
        "The torch side of a stream: batches, equal epochs on every rank, lockstep evaluation of sharded models.",
    ),
    Section(
        "Checkpoint configs", "ferv39k_hf.clips.protocol",
        ["image_processor_config", "video_processor_config", "write_processor_configs"],
        "The clip protocol where transformers' processors read it ([model-cards.md](model-cards.md)).",
    ),
    Section(
        "Scoring", "ferv39k_hf.metrics", [], "WAR, UAR and their breakdowns, numpy only.", all_of_module=True,
    ),
]

# Modules whose __all__ must be covered by the sections above (names that are modules are skipped).
COVERED_MODULES = ("ferv39k_hf", "ferv39k_hf.metrics")



# --- signatures --------------------------------------------------------------------------------------


class _Shown:
    """An annotation shown as the source writes it (``from __future__ import annotations`` makes it a str)."""

    def __init__(self, annotation: Any):
        self.text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    def __repr__(self) -> str:
        return self.text


def signature_text(name: str, obj: Callable, skip_first: bool = False) -> str:
    """``name(params) -> return`` with annotations as written in the source."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    empty = inspect.Signature.empty
    params = [p.replace(annotation=p.annotation if p.annotation is empty else _Shown(p.annotation))
              for p in list(signature.parameters.values())[1 if skip_first else 0 :]]
    returns = signature.return_annotation
    return name + str(signature.replace(parameters=params, return_annotation=returns if returns is empty
                                        else _Shown(returns)))


def _wrapped(text: str, width: int = 100) -> str:
    """A long one-line signature broken after its opening parenthesis, one parameter a line."""
    if len(text) <= width or "(" not in text:
        return text
    head, _, rest = text.partition("(")
    body, _, tail = rest.rpartition(")")
    params, depth, current = [], 0, ""
    for char in body:  # split at top-level commas only
        if char == "," and depth == 0:
            params.append(current.strip())
            current = ""
            continue
        depth += char in "([{" and 1 or 0
        depth -= char in ")]}" and 1 or 0
        current += char
    if current.strip():
        params.append(current.strip())
    return head + "(\n" + "".join(f"    {p},\n" for p in params) + ")" + tail


# --- entries -----------------------------------------------------------------------------------------


def _source_comment(module: Any, name: str) -> str:
    """The comment lines right above ``name = ...`` at the top level of ``module``'s source."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    for node in ast.parse(source).body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            comments, row = [], node.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#"):
                comments.insert(0, lines[row].strip().lstrip("#").strip())
                row -= 1
            return " ".join(comments)
    return ""


def _value_text(name: str, value: Any) -> str:
    """``name = value``, a long tuple or dict wrapped to 100 columns, items in their own order."""
    package_dir = str(Path(importlib.import_module("ferv39k_hf").__file__).resolve().parent)
    if isinstance(value, (tuple, list, dict)) or hasattr(value, "items"):
        mapping = hasattr(value, "items")
        items = [f"{k!r}:\0{v!r}" for k, v in value.items()] if mapping else [repr(v) for v in value]
        opening, closing = ("{", "}") if mapping else ("[", "]") if isinstance(value, list) else ("(", ")")
        one_line = f"{name} = {opening}{', '.join(items)}{closing}"
        if len(one_line) <= 100:
            text = one_line
        else:
            body = textwrap.fill(", ".join(items) + ",", width=96, break_long_words=False, break_on_hyphens=False)
            text = f"{name} = {opening}\n" + textwrap.indent(body, "    ") + f"\n{closing}"
    else:
        text = f"{name} = {pprint.pformat(value, width=100)}"
    return text.replace("\0", " ").replace(package_dir, "<ferv39k_hf package folder>")


def _public_members(cls: type) -> List[str]:
    names = [name for name in cls.__dict__ if not name.startswith("_")]
    if "__call__" in cls.__dict__:
        names.insert(0, "__call__")
    return [name for name in names if inspect.isfunction(cls.__dict__[name])
            or isinstance(cls.__dict__[name], (property, staticmethod, classmethod))]


def _dataclass_fields(cls: type) -> List[str]:
    own = cls.__dict__.get("__annotations__", {})
    rows = []
    for field in dataclasses.fields(cls):
        if field.name not in own:
            continue
        default = "" if field.default is dataclasses.MISSING else f" = {field.default!r}"
        rows.append(f"{field.name}: {_Shown(field.type)!r}{default}")
    return rows


def class_entry(cls: type) -> List[str]:
    out: List[str] = []
    if dataclasses.is_dataclass(cls):
        fields = _dataclass_fields(cls)
        bases = [base.__qualname__ for base in cls.__bases__ if base is not object]
        out += ["```python", f"@dataclass{'(frozen=True)' if cls.__dataclass_params__.frozen else ''}",
                f"class {cls.__name__}{'(' + ', '.join(bases) + ')' if bases else ''}:"]
        out += [f"    {row}" for row in fields] + ["```"]
        inherited = [f.name for f in dataclasses.fields(cls) if f.name not in cls.__dict__.get("__annotations__", {})]
        if inherited:
            out += ["", f"Inherited fields: {', '.join(f'`{name}`' for name in inherited)}."]
    elif issubclass(cls, BaseException):
        bases = ", ".join(base.__name__ for base in cls.__bases__)
        out += ["```python", f"class {cls.__name__}({bases})", "```"]
    else:
        text = signature_text(f"class {cls.__name__}", cls.__init__, skip_first=True)
        out += ["```python", _wrapped(text.removesuffix(" -> None")), "```"]
    out += ["", docstring_markdown(cls.__dict__.get("__doc__"))]
    for member in _public_members(cls):
        attribute = cls.__dict__[member]
        out += ["", f"#### `{cls.__name__}.{member}`", ""]
        if isinstance(attribute, property):
            out += ["*property*", "", docstring_markdown(attribute.fget.__doc__)]
            continue
        function = attribute.__func__ if isinstance(attribute, (staticmethod, classmethod)) else attribute
        skip = not isinstance(attribute, staticmethod)
        shown = f"{cls.__name__}.{member}"
        out += ["```python", _wrapped(signature_text(shown, function, skip_first=skip)), "```", "",
                docstring_markdown(function.__doc__)]
    return out


def entry(module_name: str, name: str) -> List[str]:
    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    out = [f"### `{module_name}.{name}`", ""]
    if inspect.isclass(obj):
        return out + class_entry(obj)
    if callable(obj):
        return out + ["```python", _wrapped(signature_text(name, obj)), "```", "", docstring_markdown(obj.__doc__)]
    comment = _source_comment(_defining_module(module, name), name)
    out += ["```python", _value_text(name, obj), "```"]
    if comment:
        out += ["", inline(comment)]
    return out


def _defining_module(module: Any, name: str) -> Any:
    """The module whose source assigns ``name``, following ``from .x import name`` (a package re-exports
    its modules' constants); decided from the source alone, whatever else is imported."""
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.ImportFrom) and any(alias.name == name for alias in node.names):
            target = importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__)
            return _defining_module(importlib.import_module(target), name)
    return module


def _module_all(module_name: str) -> List[str]:
    module = importlib.import_module(module_name)
    names = []
    for name in getattr(module, "__all__", []):
        value = getattr(module, name)
        if not inspect.ismodule(value):
            names.append(name)
    return names


def documented_names() -> List[str]:
    """``module.name`` for every name the sections document, in order."""
    names = []
    for section in SECTIONS:
        listed = list(section.names)
        if section.all_of_module:
            listed += [n for n in _module_all(section.module) if n not in listed]
        names += [".".join(_where(section.module, name)) for name in listed]
    return names


def _where(module: str, name: str) -> tuple:
    """(module, name) of a section's entry: ``module:name`` names its own module."""
    return tuple(name.split(":")) if ":" in name else (module, name)


def _leftovers() -> List[str]:
    """``module.name`` of every public name of COVERED_MODULES that no section documents."""
    documented = set(documented_names())
    return [f"{module}.{name}" for module in COVERED_MODULES for name in _module_all(module)
            if f"{module}.{name}" not in documented]


def render() -> str:
    """The text of docs/api.md."""
    out = [
        "# API reference",
        "",
        "<!-- Generated by docs/make_api.py from the docstrings and signatures; do not edit by hand. -->",
        "<!-- Regenerate: python docs/make_api.py > docs/api.md (tests/test_docs.py checks it is current). -->",
        "",
        "Public names of `ferv39k_hf` (import the package and use `ferv39k_hf.<name>`; torch, transformers "
        "and PyAV are imported only by the names that need them), the scoring functions of "
        "`ferv39k_hf.metrics`, the `evaluate` metric and the `ferv39k-hf` command. Signatures show the "
        "annotations as the source writes them.",
        "",
    ]
    leftovers = _leftovers()
    sections = list(SECTIONS) + ([Section("Other public names", "", [])] if leftovers else [])
    out += ["Contents:", ""]
    for section in sections:
        out.append(f"- [{section.title}](#{_slug(section.title)})")
    out += ["- [The `evaluate` metric](#the-evaluate-metric)", "- [Command line](#command-line)", ""]
    for section in SECTIONS:
        out += [f"## {section.title}", ""]
        if section.intro:
            out += [section.intro, ""]
        listed = list(section.names)
        if section.all_of_module:
            listed += [n for n in _module_all(section.module) if n not in listed]
        for name in listed:
            out += entry(*_where(section.module, name)) + [""]
    if leftovers:
        out += ["## Other public names", ""]
        for dotted in leftovers:
            module_name, _, name = dotted.rpartition(".")
            out += entry(module_name, name) + [""]
    out += metric_section() + [""] + cli_section()
    return "\n".join(out).rstrip() + "\n"


def _slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help=f"compare with {API_MD.relative_to(REPO)}; exit 1 if it differs")
    args = parser.parse_args(argv)
    text = render()
    if not args.check:
        sys.stdout.write(text)
        return 0
    current = API_MD.read_text(encoding="utf-8") if API_MD.exists() else ""
    if current != text:
        print(f"{API_MD.relative_to(REPO)} is out of date: run python docs/make_api.py > docs/api.md", file=sys.stderr)
        return 1
    print(f"{API_MD.relative_to(REPO)} is up to date")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # the checkout's package, as the tests import it
    sys.exit(main())
