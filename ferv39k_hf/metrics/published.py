"""Published FERV39k results (WAR and UAR on the official test set), in one place for the CLI, docs and cards.

Papers print the pair in either order (the dataset paper WAR/UAR, DFER-CLIP
and S2D UAR/WAR), so each number here is stored under its name. Every other
place that shows published numbers reads :data:`PUBLISHED` or renders it with
:func:`published_table` (docs/scoring.md holds its Markdown output, checked by
a test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple


@dataclass(frozen=True)
class PublishedResult:
    """One published result: ``war`` and ``uar`` in percent, as printed (2 decimals).

    Example:
        >>> mae_dfer = next(r for r in PUBLISHED if r.method == "MAE-DFER")
        >>> mae_dfer.war, mae_dfer.uar
        (52.07, 43.12)
    """

    method: str
    venue: str  # venue and year, or the year alone where the venue is not recorded here
    war: float
    uar: float
    source: str  # where the pair was read, in a few words


PUBLISHED: Tuple[PublishedResult, ...] = (
    PublishedResult("Two VGG13-LSTM (dataset paper's best baseline)", "CVPR 2022", 44.54, 32.79,
                    "FERV39k paper (Wang et al.), printed WAR/UAR"),
    PublishedResult("Former-DFER", "ACM MM 2021", 46.85, 37.20, "comparison tables of later papers"),
    PublishedResult("IAL", "AAAI 2023", 48.54, 35.82, "its paper and later comparison tables"),
    PublishedResult("M3DFEL", "CVPR 2023", 47.67, 35.94, "its paper and later comparison tables"),
    PublishedResult("VideoMAE ViT-B", "NeurIPS 2022 (method)", 49.61, 38.50,
                    "a FERV39k baseline in comparison tables of later papers"),
    PublishedResult("DFER-CLIP", "BMVC 2023", 51.65, 41.27, "its paper, printed UAR/WAR"),
    PublishedResult("MAE-DFER", "ACM MM 2023", 52.07, 43.12, "its paper, printed UAR/WAR"),
    PublishedResult("VideoMAE pre-trained on VoxCeleb2", "not recorded", 52.39, 43.33,
                    "comparison tables of later papers"),
    PublishedResult("S2D", "IEEE TAFFC 2024", 52.56, 41.28, "its paper, printed UAR/WAR"),
    PublishedResult("S2D with class oversampling", "IEEE TAFFC 2024", 46.21, 43.97,
                    "its repository; trades WAR for UAR"),
    PublishedResult("FineCLIPER", "ACM MM 2024", 53.98, 45.22, "its repository or survey tables"),
    PublishedResult("S4D", "2025", 53.65, 43.41, "its repository or survey tables"),
    PublishedResult("OUS", "2024", 53.30, 42.43, "its repository or survey tables"),
    PublishedResult("UMBEnet", "2024", 52.10, 44.01, "its repository or survey tables"),
    PublishedResult("A3lign-DFER", "2024", 51.77, 41.87, "its repository or survey tables"),
)

RANK_KEYS = ("war", "uar")


def _check_rank(rank_by: str) -> None:
    if rank_by not in RANK_KEYS:
        raise ValueError(f"rank_by must be one of {RANK_KEYS}, got {rank_by!r}")


def ranked_rows(
    entries: Sequence[Tuple[str, float, float, str]] = (), *, rank_by: str = "war"
) -> List[Tuple[int, str, str, float, float, str]]:
    """The published rows plus ``entries``, best first by ``rank_by``.

    ``entries`` are your results as ``(name, war_percent, uar_percent, note)``.
    Returns ``(rank, method, venue, war, uar, note)`` rows; your rows carry the
    venue ``"this file"`` (ties keep the published row first).

    Example:
        >>> rows = ranked_rows([("mine.csv", 99.0, 10.0, "")])
        >>> rows[0][:3], rows[-1][1] == "mine.csv"
        ((1, 'mine.csv', 'this file'), False)
        >>> ranked_rows([("mine.csv", 99.0, 10.0, "")], rank_by="uar")[-1][1]
        'mine.csv'
    """
    _check_rank(rank_by)
    rows = [(r.method, r.venue, r.war, r.uar, r.source, 0) for r in PUBLISHED]
    rows += [(name, "this file", float(war), float(uar), note, 1) for name, war, uar, note in entries]
    column = 2 if rank_by == "war" else 3
    rows.sort(key=lambda row: (-row[column], row[5]))
    return [(rank, *row[:5]) for rank, row in enumerate(rows, start=1)]


def published_table(
    entries: Sequence[Tuple[str, float, float, str]] = (), *, rank_by: str = "war", markdown: bool = True
) -> str:
    """The published results (and ``entries``, see :func:`ranked_rows`) as a Markdown or plain-text table.

    Columns: rank, method, venue, WAR %, UAR %, note. Your rows are marked
    with ``**`` in Markdown and ``>`` in plain text.

    Example:
        >>> published_table(markdown=False).splitlines()[0].split()
        ['#', 'method', 'venue', 'WAR', '%', 'UAR', '%', 'source', '/', 'note']
    """
    header = ["#", "method", "venue", "WAR %", "UAR %", "source / note"]
    body: List[List[str]] = []
    marks: List[bool] = []
    for rank, method, venue, war, uar, note in ranked_rows(entries, rank_by=rank_by):
        mine = venue == "this file"
        cells = [str(rank), method, venue, f"{war:.2f}", f"{uar:.2f}", note]
        if mine and markdown:
            cells = [f"**{cell}**" if cell else cell for cell in cells]
        body.append(cells)
        marks.append(mine)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---:", "---", "---", "---:", "---:", "---"]) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    right = {0, 3, 4}

    def line(cells: List[str], mark: str) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return f"{mark} " + "  ".join(padded).rstrip()

    return "\n".join([line(header, " "), *(line(cells, ">" if mine else " ") for cells, mine in zip(body, marks))])

