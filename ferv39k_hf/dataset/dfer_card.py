"""The dataset card (README.md) of a built DFEW or MAFW folder: YAML that load_dataset reads, then the facts."""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Mapping, Sequence

import datasets
import yaml

from ferv39k_hf.dfer_taxonomy import CLIPS_SPLIT, FOLDS, facts


def _table(header: List[str], rows: List[List[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def dfer_card_metadata(dataset: str, config: str, features: datasets.Features, shards: Sequence[str],
                       rows: int, nbytes: int, label_order: str, frames: str, synthetic: bool = False) -> Dict:
    """The YAML front matter: the config, its one split's files, the features, the label order.

    ``synthetic``: built from a ``ferv39k-hf sample`` archive; ``ferv39k_synthetic: true`` keeps ``score``
    from ranking results on it among published ones."""
    info = facts(dataset)
    meta = {
        "pretty_name": f"{info.title} ({config})",
        "license": "other",
        "license_name": f"{dataset}-terms-of-use",
        "license_link": info.homepage,
        "task_categories": ["video-classification"],
        "tags": ["facial-expression-recognition", dataset, "video", "private-use-only"],
        "ferv39k_dataset": dataset,
        "ferv39k_config": config,
        "ferv39k_label_order": label_order,
        "ferv39k_frames": frames,
        "configs": [{"config_name": config, "default": True,
                     "data_files": [{"split": CLIPS_SPLIT, "path": list(shards)}]}],
        "dataset_info": {
            "config_name": config,
            "features": features._to_yaml_list(),
            "splits": [{"name": CLIPS_SPLIT, "num_bytes": int(nbytes), "num_examples": int(rows)}],
            "download_size": int(nbytes),
            "dataset_size": int(nbytes),
        },
    }
    if synthetic:
        meta["ferv39k_synthetic"] = True
    return meta


def _notes(unlisted: int, skipped: int, source: str) -> List[str]:
    notes = []
    if unlisted:
        notes.append(f"{unlisted} clip(s) in the archive's `{source}` folder are in no fold list (for DFEW, the "
                     "clips that are not single-labelled); they are counted in `build_report.json`, not rows.")
    if skipped:
        notes.append(f"**{skipped} list line(s) did not become rows**; `build_report.json` names each.")
    return notes


def render_dfer_card(meta: Dict, class_counts: Counter, fold_sizes: Mapping[int, Sequence[int]],
                     unlisted: int, skipped: int, command: str, source: str) -> str:
    """The whole README.md: front matter, then how it was built, label order, folds, counts, terms."""
    dataset, config, order = meta["ferv39k_dataset"], meta["ferv39k_config"], meta["ferv39k_label_order"]
    info = facts(dataset)
    words = info.label_names(order)
    fold_rows = [[k, *fold_sizes.get(k, (0, 0))] for k in FOLDS]
    notes = _notes(unlisted, skipped, source)
    body = f"""
# {info.title} ({config})

{info.descriptions[config]} Built from a licensed copy of the archive (frames from `{source}`) with
[ferv39k-hf](https://pypi.org/project/ferv39k-hf/):

```
{command}
```

Every clip is stored once, in the one split `{CLIPS_SPLIT}`; the official folds are columns:
`test_fold` (the fold whose test list names the clip) and `train_folds` (the folds whose train lists name it).
Frames are the archive's own bytes, unchanged, in natural file-name order.
{chr(10).join(notes)}

## Loading a fold

```python
import datasets, ferv39k_hf
ds = datasets.load_dataset("path/to/this/folder")
split = ferv39k_hf.fold(ds, 1)          # DatasetDict: train and test of fold 1, no frame copied
```

There is no official validation split. Published figures are the mean over the 5 folds of WAR and of UAR
(`ferv39k-hf score` with one predictions file per fold); say so when reporting fold 1 alone.

## Label order: {order}

{_table(["id", "class"], [[i, w] for i, w in enumerate(words)])}

## Clips per class

{_table(["class", "clips"], [[w, class_counts.get(w, 0)] for w in words])}

## Folds

{_table(["fold", "train", "test"], fold_rows)}

## Terms of use

{info.licence} Share this folder only through a **private** repository of your own organization.
Homepage: {info.homepage}

## Citation

```bibtex
{info.citation.strip()}
```
"""
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120)
    return f"---\n{front}---\n{body}"
