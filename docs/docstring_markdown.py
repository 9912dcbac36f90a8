"""Docstrings -> Markdown for docs/api.md: Google-style sections as lists, examples and ``::`` blocks fenced."""

from __future__ import annotations

import inspect
import re
import textwrap
from typing import List, Optional

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`~?([^`]+)`")
_SECTION = re.compile(r"^(Args|Arguments|Returns|Yields|Raises|Example|Examples|Shapes|Note|Notes)::?\s*$")


def inline(text: str) -> str:
    """RST inline markup (``code``, :class:`name`) as Markdown."""
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return text.replace("``", "`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: List[str], start: int, base: int) -> int:
    """The index after the block of lines (blank lines included) indented deeper than ``base``."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return end


def _items(block: List[str]) -> List[str]:
    """Google-style ``name: text`` items (continuations indented deeper) as Markdown list items."""
    base = min(_indent(line) for line in block if line.strip())
    items: List[str] = []
    for line in block:
        if not line.strip():
            continue
        if _indent(line) == base:
            name, sep, rest = line.strip().partition(": ")
            items.append(f"- `{name}`: {rest}" if sep and len(name) < 60 else f"- {line.strip()}")
        else:
            items[-1] += " " + line.strip()
    return [inline(item) for item in items]


def _code(block: List[str]) -> List[str]:
    return ["```python", *textwrap.dedent("\n".join(block)).strip("\n").splitlines(), "```"]


def docstring_markdown(doc: Optional[str]) -> str:
    """A cleaned docstring as Markdown: Args/Raises as lists, examples and ``::`` blocks fenced."""
    if not doc:
        return "*(no docstring)*"
    lines = inspect.cleandoc(doc).splitlines()
    out: List[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _SECTION.match(line.strip()) if _indent(line) == 0 else None
        if header:
            end = _block(lines, i + 1, 0)
            block = lines[i + 1 : end]
            kind = header.group(1)
            out += (["", f"**{kind}**", ""] if out and out[-1] else [f"**{kind}**", ""])
            if kind in ("Example", "Examples"):
                out += _code(block)
            elif kind in ("Args", "Arguments", "Raises"):
                out += _items(block)
            else:
                out += [inline(text) for text in textwrap.dedent("\n".join(block)).splitlines()]
            i = end
            continue
        if line.strip().startswith(">>>"):
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            out += _code(lines[i:end])
            i = end
            continue
        if line.rstrip().endswith("::") and i + 1 < len(lines):
            start = i + 1
            while start < len(lines) and not lines[start].strip():
                start += 1
            end = _block(lines, start, _indent(line))
            text = line.rstrip()[:-1]
            out.append(inline(text[:-1] if text.endswith(" :") else text))
            out += [""] + _code(lines[start:end])
            i = end
            continue
        out.append(inline(line.strip() if _indent(line) < 4 else line))
        i += 1
    return "\n".join(out).strip()
