"""Read a predictions file (CSV or JSON Lines) and a built split's clips, and pair them clip by clip.

A predictions file has one row per clip: ``clip_id`` (or ``clip``, as
``examples/predict.py`` writes it) and ``prediction``, a class word or an
integer id (read in the order ``label_order`` names), optionally with the 7
probability columns ``p_Angry`` .. ``p_Surprise``. Clip ids are
``Scene/Emotion/NNNN``; a path prefix (``/data/2_ClipsforFaceCrop/...``) is
dropped. The split's clips come from :mod:`.splitclips`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ferv39k_hf.metrics.predrows import (
    ID_COLUMNS,
    PROBABILITY_COLUMNS,
    QUOTED_CHARS,
    SHOWN,
    PredictionFileError,
    check_columns,
    listing,
    open_rows,
    quoted,
)
from ferv39k_hf.metrics.splitclips import SplitClips, other_splits, read_split, split_names  # noqa: F401 (public)
from ferv39k_hf.taxonomy import CLASS_WORDS, LABEL_ORDERS


@dataclass
class PredictionFile:
    """The rows of a predictions file: clip ids, the file's line of each, class words, probabilities or None."""

    path: Path
    clip_ids: List[str]
    lines: List[int]
    words: List[str]
    probabilities: Optional[np.ndarray]  # (rows, 7) in CLASS_WORDS order
    labels: List[Optional[str]] = field(default_factory=list)  # the file's own label column (a class word), if any
    # rows read with ``keep`` whose clip is not in it: how many, and (clip id, line) of all or the first few
    unknown: List[Tuple[str, int]] = field(default_factory=list)
    unknown_count: int = 0
    # with ``others``: the rows of the folder's other splits, counted per split and not kept
    ignored: Dict[str, int] = field(default_factory=dict)
    others_checked: bool = False


@dataclass
class Paired:
    """Predictions and references paired by clip, as ids in CLASS_WORDS order, in the split's order."""

    clip_ids: List[str]
    predictions: np.ndarray
    references: np.ndarray
    scenes: List[str]
    scenarios: List[str]
    split_size: int
    missing: List[str] = field(default_factory=list)  # clips of the split with no prediction
    unknown: List[Tuple[str, int]] = field(default_factory=list)  # (clip, line) in no split of the folder
    unknown_count: int = 0  # all such rows (``unknown`` may list only the first few)
    ignored: Dict[str, int] = field(default_factory=dict)  # other split -> its clips in the file, not scored


def normalise_clip_id(text: str) -> str:
    """``Scene/Emotion/NNNN`` from an id or a path ending in one (prefix, backslashes, a final slash dropped)."""
    parts = [part for part in str(text).strip().replace("\\", "/").split("/") if part]
    return "/".join(parts[-3:]) if len(parts) >= 3 else str(text).strip()


# ---------------------------------------------------------------- the predictions file


def _class_word(value: object, order: Optional[Sequence[str]], path: Path, line: int) -> str:
    if isinstance(value, str):
        text = value.strip()
        for word in CLASS_WORDS:
            if text.lower() == word.lower():
                return word
        try:
            value = int(text) if len(text) < 20 else text
        except ValueError:
            pass
        if isinstance(value, str):
            raise PredictionFileError(f"{path} line {line}: prediction {quoted(value)} is neither a class word "
                                      f"({', '.join(CLASS_WORDS)}) nor an id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise PredictionFileError(f"{path} line {line}: prediction {quoted(value)} is neither a class word nor an "
                                  "integer id")
    if order is None:
        raise PredictionFileError(
            f"{path} line {line}: prediction {value} is a class id; say which order the ids follow with "
            "--label-order alphabetical (Angry=0) or dfew (Happy=0), or write class words"
        )
    if not 0 <= value < len(order):
        raise PredictionFileError(f"{path} line {line}: prediction {value} is not a class id 0..{len(order) - 1}")
    return order[value]


def _probabilities(row: Dict[str, object], path: Path, line: int) -> List[float]:
    values = []
    for name in PROBABILITY_COLUMNS:
        value = row.get(name)
        try:
            values.append(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            raise PredictionFileError(f"{path} line {line}: {name} = {quoted(value)} is not a number") from None
    array = np.array(values)
    if not np.isfinite(array).all() or (array < 0).any() or abs(array.sum() - 1) > 1e-3:
        raise PredictionFileError(
            f"{path} line {line}: {', '.join(PROBABILITY_COLUMNS)} must be probabilities summing to 1 "
            f"(got sum {array.sum():.6f})"
        )
    return values


def _label_word(value: object, order: Optional[Sequence[str]]) -> Optional[str]:
    """The class word of a row's own ``label`` (information, checked against the dataset), or None when absent or
    an id whose order is not known."""
    text = str(value).strip() if value not in (None, "") else ""
    word = next((w for w in CLASS_WORDS if w.lower() == text.lower()), None)
    if word is None and order is not None and text.isdigit() and int(text) < len(order):
        word = order[int(text)]
    return word


def _check_header(columns: List[str], path: Path) -> Tuple[str, bool]:
    """(the id column, whether the 7 probability columns are given); PredictionFileError naming what is wrong."""
    id_column = next((name for name in ID_COLUMNS if name in columns), None)
    given = [name for name in PROBABILITY_COLUMNS if name in columns]
    if id_column is None or ("prediction" not in columns and len(given) < len(PROBABILITY_COLUMNS)):
        shown = ", ".join(quoted(name) for name in columns[:10]) + (" ..." if len(columns) > 10 else "")
        raise PredictionFileError(
            f"{path}: needs a clip_id column and a prediction column (or the 7 probability columns "
            f"{', '.join(PROBABILITY_COLUMNS)}); found columns [{shown}]"
        )
    check_columns(columns, path)
    if given and len(given) < len(PROBABILITY_COLUMNS):
        missing = [name for name in PROBABILITY_COLUMNS if name not in given]
        raise PredictionFileError(f"{path}: probability columns must be all 7 or none; missing {', '.join(missing)}")
    return id_column, bool(given)


def read_predictions(path, label_order: Optional[str] = None, *, keep: Optional[Collection[str]] = None,
                     all_unknown: bool = True, others: Optional[Dict[str, str]] = None) -> PredictionFile:
    """Read a predictions file; see the module docstring for its columns. PredictionFileError names file and line.

    ``label_order`` ("alphabetical" or "dfew") says what integer predictions
    mean; class words need none. With probability columns and no
    ``prediction`` column, the prediction is the most probable class; with
    both, they must agree. The file is read row by row: with ``keep`` (the
    clip ids of the split to score) only those rows are kept, and the others
    are counted in ``unknown_count`` and listed in ``unknown`` (all of them,
    or with ``all_unknown=False`` the first few), so memory follows the rows
    kept, not the file. ``others`` (clip id -> split, see :func:`other_splits`)
    counts rows of the folder's other splits in ``ignored`` instead. Example:
    ``read_predictions("preds.csv").words[:2]``.
    """
    path = Path(path)
    if label_order is not None and label_order not in LABEL_ORDERS:
        raise PredictionFileError(f"unknown label order {label_order!r}; use one of {sorted(LABEL_ORDERS)}")
    order = LABEL_ORDERS[label_order] if label_order else None
    columns, rows = open_rows(path)
    id_column, with_probabilities = _check_header(columns, path)
    result = PredictionFile(path, [], [], [], None, others_checked=others is not None)
    ignored: Dict[str, int] = defaultdict(int)
    probabilities: List[List[float]] = []
    disagree: List[str] = []
    disagreeing = 0
    for line, row in rows:
        value = row.get(id_column)
        if value in (None, ""):
            raise PredictionFileError(f"{path} line {line}: empty {id_column}")
        clip_id = normalise_clip_id(str(value))
        top = _probabilities(row, path, line) if with_probabilities else None
        if row.get("prediction") not in (None, ""):
            word = _class_word(row.get("prediction"), order, path, line)
            if top is not None and top[CLASS_WORDS.index(word)] < max(top) - 1e-6:
                disagreeing += 1
                if len(disagree) < SHOWN:
                    disagree.append(f"line {line} ({word}, most probable {CLASS_WORDS[int(np.argmax(top))]})")
        elif top is not None:
            word = CLASS_WORDS[int(np.argmax(top))]
        else:
            raise PredictionFileError(f"{path} line {line}: no prediction")
        if keep is not None and clip_id not in keep and others and clip_id in others:
            ignored[others[clip_id]] += 1
            continue
        if keep is not None and clip_id not in keep:
            result.unknown_count += 1
            if all_unknown or len(result.unknown) < SHOWN:
                result.unknown.append((quoted(clip_id)[1:-1] if len(clip_id) > QUOTED_CHARS else clip_id, line))
            continue
        result.clip_ids.append(clip_id)
        result.lines.append(line)
        result.words.append(word)
        result.labels.append(_label_word(row.get("label"), order))
        if top is not None:
            probabilities.append(top)
    if disagreeing:
        raise PredictionFileError(
            f"{path}: the prediction is not the most probable class on {disagreeing} line(s): "
            f"{listing(disagree, disagreeing)}; check --label-order or the probability columns"
        )
    result.ignored = dict(sorted(ignored.items()))
    if not result.clip_ids and not result.unknown_count and not ignored:
        raise PredictionFileError(f"{path}: no prediction rows: there is nothing to score")
    if with_probabilities:
        result.probabilities = np.array(probabilities, dtype=float).reshape(-1, len(CLASS_WORDS))
    return result


# ---------------------------------------------------------------- pairing


def pair(predictions: PredictionFile, clips: SplitClips, *, allow_partial: bool = False,
         others: Optional[Dict[str, str]] = None) -> Paired:
    """Pair each split clip with its prediction; missing, repeated or unknown clips are errors.

    ``others`` (clip id -> split, see :func:`other_splits`) names the folder's
    other splits: a file's clips of those are not scored and are counted in
    ``ignored`` (a file of the whole archive scores its test clips), not
    errors. With ``allow_partial`` the clips that have a prediction are scored
    and the missing ones, and those in no split, are listed in the result;
    repeated clips stay an error (which of two predictions to score is not defined).
    """
    path = predictions.path
    others = others or {}
    seen: Dict[str, List[int]] = defaultdict(list)
    for clip_id, line in zip(predictions.clip_ids, predictions.lines):
        seen[clip_id].append(line)
    known = set(clips.clip_ids)
    repeated = [f"{c} (lines {', '.join(map(str, lines))})" for c, lines in seen.items() if len(lines) > 1]
    ignored: Dict[str, int] = defaultdict(int, predictions.ignored)
    for clip_id in seen:
        if clip_id not in known and clip_id in others:
            ignored[others[clip_id]] += 1
    unknown = [(c, lines[0]) for c, lines in seen.items() if c not in known and c not in others]
    unknown_count = len(unknown) + predictions.unknown_count  # with the rows read with keep
    unknown += predictions.unknown
    missing = [c for c in clips.clip_ids if c not in seen]
    problems = []
    if repeated:
        problems.append(f"{len(repeated)} clip(s) repeated: {listing(repeated)}")
    disagree = _label_disagreements(predictions, clips)
    if disagree:
        problems.append(f"the file's label column disagrees with the dataset's on {len(disagree)} line(s): "
                        f"{listing(disagree)} (a file of another build or label order?)")
    if not allow_partial:
        if missing:
            total = len(clips.clip_ids)
            problems.append(f"{len(missing)} of the {total} {clips.split} clips missing: {listing(missing)}")
        if unknown:
            names = [f"{c} (line {line})" for c, line in unknown[:SHOWN]]
            where = "any split of the folder" if others or predictions.others_checked else f"the {clips.split} split"
            problems.append(f"{unknown_count} clip(s) not in {where}: {listing(names, unknown_count)}")
    if problems:
        hint = "" if repeated or allow_partial else "; --allow-partial scores the clips that are there"
        raise PredictionFileError(f"{path}: " + "; ".join(problems) + hint)
    row_of = {clip_id: index for index, clip_id in enumerate(predictions.clip_ids)}
    scored = [index for index, clip_id in enumerate(clips.clip_ids) if clip_id in row_of]
    if not scored:
        raise PredictionFileError(f"{path}: none of its clips is in the {clips.split} split of {clips.folder}")
    word_id = {word: index for index, word in enumerate(CLASS_WORDS)}
    return Paired(
        clip_ids=[clips.clip_ids[i] for i in scored],
        predictions=np.array([word_id[predictions.words[row_of[clips.clip_ids[i]]]] for i in scored], dtype=np.int64),
        references=np.array([word_id[clips.words[i]] for i in scored], dtype=np.int64),
        scenes=[clips.scenes[i] for i in scored],
        scenarios=[clips.scenarios[i] for i in scored],
        split_size=len(clips.clip_ids),
        missing=missing,
        unknown=unknown,
        unknown_count=unknown_count,
        ignored=dict(sorted(ignored.items())),
    )


def _label_disagreements(predictions: PredictionFile, clips: SplitClips) -> List[str]:
    """``line N (clip: file says X, dataset Y)`` for each row whose own label is not the split's class."""
    if not any(predictions.labels):
        return []
    word_of = dict(zip(clips.clip_ids, clips.words))
    return [f"line {line} ({clip_id}: file says {label}, dataset {word_of[clip_id]})"
            for clip_id, line, label in zip(predictions.clip_ids, predictions.lines, predictions.labels)
            if label is not None and clip_id in word_of and word_of[clip_id] != label]


def check_same_clips(first: Paired, second: Paired) -> None:
    """PredictionFileError unless two pairings cover the same clips (a comparison must be paired)."""
    if first.clip_ids != second.clip_ids:
        only_first = sorted(set(first.clip_ids) - set(second.clip_ids))
        only_second = sorted(set(second.clip_ids) - set(first.clip_ids))
        raise PredictionFileError(
            f"the two files do not cover the same clips: {len(only_first)} only in the first "
            f"({listing(only_first)}), {len(only_second)} only in the second ({listing(only_second)})"
        )

