"""The rows of a predictions file (CSV with a header, or JSON Lines), streamed line by line with checked columns.

Nothing is read whole: a line holds at most :data:`MAX_LINE_CHARS` characters, so reading costs memory for the
rows a caller keeps, not for the file. Every refusal is one line naming the file and line; a long value is
quoted by its first characters only.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple

from ferv39k_hf.errors import QUOTED_CHARS, Ferv39kError, quoted
from ferv39k_hf.taxonomy import CLASS_WORDS

ID_COLUMNS = ("clip_id", "clip")
PROBABILITY_COLUMNS = tuple(f"p_{word}" for word in CLASS_WORDS)
# examples/predict.py writes "probability" (the top class's): read, never used. A training run's
# eval_predictions.csv also names each clip's scene and label (checked against the dataset) and, when streamed,
# the rank that scored it.
INFORMATION_COLUMNS = ("probability", "scene", "scenario", "label", "rank")
KNOWN_COLUMNS = (*ID_COLUMNS, "prediction", *PROBABILITY_COLUMNS, *INFORMATION_COLUMNS)
MAX_LINE_CHARS = 1 << 20  # a row of 7 probabilities is under 200 characters
SHOWN = 5  # clips or lines named in an error before "..."
__all__ = ["QUOTED_CHARS", "SHOWN", "PredictionFileError", "check_columns", "listing", "open_rows", "quoted"]
class PredictionFileError(Ferv39kError, ValueError):
    """A predictions file or dataset folder that cannot be scored as it is; the message names file and lines."""


Row = Tuple[int, Dict[str, Any]]  # (line number, column -> value)


def open_rows(path: Path) -> Tuple[List[str], Iterator[Row]]:
    """(columns, rows) of a predictions file; the rows are read as they are iterated (close by exhausting them)."""
    handle = _open(path)
    lines = _Lines(handle, path)
    try:
        first = lines.first_text()
        if not first:
            raise PredictionFileError(f"{path}: the file is empty: there is nothing to score")
        if first.lstrip().startswith("{"):
            return _json_rows(lines, path)
        return _csv_rows(lines, path)
    except BaseException:
        handle.close()
        raise


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as err:
        raise PredictionFileError(f"{path}: cannot read the file ({err.strerror})") from None


class _Lines:
    """A file's lines as text, each at most MAX_LINE_CHARS bytes, decoded one by one (so that a decoding error
    names its line), with the line number."""

    def __init__(self, handle: BinaryIO, path: Path):
        self.handle, self.path, self.number = handle, path, 0
        self._peeked: List[str] = []
        self._read_lines = 0

    def _read(self) -> str:
        data = self.handle.readline(MAX_LINE_CHARS + 1)
        self._read_lines += bool(data)
        if len(data) > MAX_LINE_CHARS:
            raise PredictionFileError(f"{self.path} line {self._read_lines}: longer than {MAX_LINE_CHARS:,} "
                                      f"bytes (starts {quoted(data[:QUOTED_CHARS].decode('utf-8', 'replace'))}); "
                                      "not a predictions file")
        try:
            return data.decode("utf-8-sig" if self._read_lines == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise PredictionFileError(f"{self.path} line {self._read_lines}: not UTF-8 text ({err.reason} at "
                                      f"byte {err.start + 1} of the line)") from None

    def first_text(self) -> str:
        """The first line with text, kept to be read again; "" for a file of blank lines."""
        while True:
            line = self._read()
            self._peeked.append(line)
            if not line or line.strip():
                return line

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._peeked.pop(0) if self._peeked else self._read()
        if not line:
            self.handle.close()
            raise StopIteration
        self.number += 1
        return line


def check_columns(columns: List[str], path: Path, line: int = 1) -> None:
    """PredictionFileError for a column named twice, both id columns, or a column this reader does not know."""
    twice = [name for name, count in Counter(columns).items() if count > 1]
    if twice:
        raise PredictionFileError(f"{path} line {line}: column {quoted(twice[0])} is named twice; which one to "
                                  "read is not defined: name each column once")
    if all(name in columns for name in ID_COLUMNS):
        raise PredictionFileError(f"{path} line {line}: both clip_id and clip columns; give the clip id once")
    unknown = [name for name in columns if name not in KNOWN_COLUMNS]
    if unknown:
        shown = ", ".join(quoted(name) for name in unknown[:3]) + (f" and {len(unknown) - 3} more"
                                                                   if len(unknown) > 3 else "")
        raise PredictionFileError(f"{path} line {line}: unknown column(s) {shown}; a predictions file has clip_id "
                                  "(or clip), prediction, p_Angry .. p_Surprise, and for information probability, "
                                  "scene, scenario, label and rank")


def _csv_rows(lines: _Lines, path: Path) -> Tuple[List[str], Iterator[Row]]:
    reader = csv.reader(lines, skipinitialspace=True)
    header = next(_guarded(reader, lines, path), None) or []
    return [name.strip() for name in header], _csv_records(reader, lines, path, [n.strip() for n in header])


def _guarded(reader: Any, lines: _Lines, path: Path) -> Iterator[List[str]]:
    """The csv reader's rows, its errors (a field over the csv limit, a stray quote) as one line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise PredictionFileError(f"{path} line {lines.number}: not CSV the reader can take ({err})") from None


def _csv_records(reader: Any, lines: _Lines, path: Path, columns: List[str]) -> Iterator[Row]:
    for cells in _guarded(reader, lines, path):
        if len(cells) > len(columns):
            raise PredictionFileError(
                f"{path} line {reader.line_num}: more values than the header's {len(columns)} columns")
        if any(cell != "" for cell in cells):
            yield reader.line_num, dict(zip(columns, cells))


def _json_rows(lines: _Lines, path: Path) -> Tuple[List[str], Iterator[Row]]:
    rows = _json_records(lines, path)
    try:
        first = next(rows)
    except StopIteration:
        return [], iter(())
    return list(first[1]), itertools.chain([first], rows)  # every row's keys are checked as it is read


def _json_records(lines: _Lines, path: Path) -> Iterator[Row]:
    for text in lines:
        if not text.strip():
            continue
        number = lines.number
        try:
            row = json.loads(text, object_pairs_hook=lambda pairs, n=number: _object(pairs, path, n))
        except json.JSONDecodeError as error:
            raise PredictionFileError(f"{path} line {number}: not a JSON object ({error.msg})") from None
        if not isinstance(row, dict):
            raise PredictionFileError(f"{path} line {number}: not a JSON object")
        check_columns(list(row), path, number)
        yield number, row


def _object(pairs: List[Tuple[str, Any]], path: Path, line: int) -> Dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        twice = next(name for name, count in Counter(names).items() if count > 1)
        raise PredictionFileError(f"{path} line {line}: key {quoted(twice)} appears twice; which one to read is "
                                  "not defined")
    return dict(pairs)


def listing(items: Sequence[str], total: Optional[int] = None) -> str:
    """The first few ``items`` joined, and how many there are in all when more (``total`` when given)."""
    count = len(items) if total is None else total
    shown = ", ".join(item if len(item) <= 2 * QUOTED_CHARS else quoted(item)[1:-1] for item in items[:SHOWN])
    return shown + (f", ... ({count} in all)" if count > SHOWN else "")
