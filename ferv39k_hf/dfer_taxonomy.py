"""The facts of DFEW and MAFW: class words, label orders, folds, configs, published results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

DATASETS: Tuple[str, ...] = ("ferv39k", "dfew", "mafw")
NUM_FOLDS = 5
FOLDS: Tuple[int, ...] = tuple(range(1, NUM_FOLDS + 1))
CLIPS_SPLIT = "clips"  # the one split of a built DFEW/MAFW folder: every clip once, folds as columns

# DFEW's official CSVs number the classes 1..7 in this order; codebases subtract 1.
DFEW_CLASSES: Tuple[str, ...] = ("Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear")
DFEW_OFFICIAL_NUMBER: Mapping[int, str] = {i + 1: word for i, word in enumerate(DFEW_CLASSES)}

# MAFW's 11 single-expression classes, as its label files spell them, in MAE-DFER's order.
MAFW_CLASSES: Tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
    "contempt", "anxiety", "helplessness", "disappointment",
)
_MAFW_ORDERS: Mapping[str, Tuple[str, ...]] = {
    "mae-dfer": MAFW_CLASSES,
    "s2d": tuple(sorted(MAFW_CLASSES)),  # id_to_calss.txt: alphabetical
    # DFEW's order with the four extra classes appended (DFER-CLIP's preprocessing comment).
    "dfer-clip": ("happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear",
                  "contempt", "anxiety", "helplessness", "disappointment"),
}
_DFEW_ORDERS: Mapping[str, Tuple[str, ...]] = {
    "dfew": DFEW_CLASSES,  # official 1-based numbers minus 1 (MAE-DFER, DFER-CLIP, S2D)
    "alphabetical": tuple(sorted(DFEW_CLASSES)),
}
# Spellings seen in codebases' comments and files, mapped to the label files' word.
MAFW_ALIASES: Mapping[str, str] = {"snxiety": "anxiety", "happy": "happiness", "sad": "sadness",
                                   "angry": "anger"}
COMPOUND_SEPARATOR = "_"

# Published 5-fold means (WAR, UAR in %), with where each pair was read.
PUBLISHED_FOLDS: Mapping[str, Tuple[Tuple[str, float, float, str], ...]] = {
    "dfew": (
        ("FineCLIPER", 76.21, 65.98, "SurveyFER table (secondary)"),
        ("S2D", 76.03, 61.82, "S2D README"),
        ("DK-CLIP", 75.41, 64.95, "DK-CLIP README"),
        ("MAE-DFER", 74.43, 63.41, "MAE-DFER README"),
        ("DFER-CLIP", 71.25, 59.61, "SurveyFER table (secondary)"),
    ),
    "mafw": (
        ("FineCLIPER", 56.91, 45.01, "SurveyFER table (secondary)"),
        ("S2D", 57.37, 41.86, "S2D README"),
        ("DK-CLIP", 56.56, 43.01, "DK-CLIP README"),
        ("MAE-DFER", 54.31, 41.62, "MAE-DFER README"),
        ("DFER-CLIP", 52.55, 39.89, "SurveyFER table (secondary)"),
    ),
}


@dataclass(frozen=True)
class DferFacts:
    """One dataset's facts: its configs, label orders and official sizes."""

    name: str
    title: str
    classes: Tuple[str, ...]
    orders: Mapping[str, Tuple[str, ...]]
    default_order: str
    configs: Tuple[str, ...]  # the first is the default
    descriptions: Mapping[str, str]
    benchmark_clips: int  # clips in the single-label folds
    fold1_sizes: Tuple[int, int]  # (train, test) of fold 1
    homepage: str
    citation: str
    licence: str

    def label_names(self, order: Optional[str] = None) -> List[str]:
        """The class words in the named order (the dataset's default order when None)."""
        name = order or self.default_order
        try:
            return list(self.orders[name])
        except KeyError:
            raise ValueError(f"unknown {self.title} label order {name!r}; choose one of "
                             f"{', '.join(sorted(self.orders))}") from None


_LICENCE = ("{0} is licence-gated: non-commercial research only, no redistribution of any clip, frame or "
            "data derived from them. Apply to the authors for the archive; keep built copies private.")

DFEW = DferFacts(
    name="dfew", title="DFEW", classes=DFEW_CLASSES, orders=_DFEW_ORDERS, default_order="dfew",
    configs=("clip_224x224", "clip_224x224_16f", "videos"),
    descriptions={
        "clip_224x224": "Face-aligned frames of each clip (Clip/clip_224x224, 256x256 images), variable length.",
        "clip_224x224_16f": "The same clips resampled to exactly 16 frames (Clip/clip_224x224_16f).",
        "videos": "The original mp4 clips (Clip/original), decoded on demand with PyAV.",
    },
    benchmark_clips=11697, fold1_sizes=(9356, 2341),
    homepage="https://dfew-dataset.github.io/",
    citation="""\
@inproceedings{jiang2020dfew,
  title     = {DFEW: A Large-Scale Database for Recognizing Dynamic Facial Expressions in the Wild},
  author    = {Jiang, Xingxun and Zong, Yuan and Zheng, Wenming and Tang, Chuangao and Xia, Wanchuang and
               Lu, Cheng and Liu, Jiateng},
  booktitle = {Proceedings of the 28th ACM International Conference on Multimedia},
  year      = {2020}
}
""",
    licence=_LICENCE.format("DFEW"),
)

MAFW = DferFacts(
    name="mafw", title="MAFW", classes=MAFW_CLASSES, orders=_MAFW_ORDERS, default_order="mae-dfer",
    configs=("single", "compound", "videos"),
    descriptions={
        "single": "The single-expression set (11 classes, 5 folds): each clip's face or frame folder.",
        "compound": "The compound (multi-label) set: each clip's frames with every class it is labelled with.",
        "videos": "The single-expression set as the original mp4 clips (clips/NNNNN.mp4).",
    },
    benchmark_clips=9172, fold1_sizes=(7333, 1839),
    homepage="https://mafw-database.github.io/MAFW/",
    citation="""\
@inproceedings{liu2022mafw,
  title     = {MAFW: A Large-scale, Multi-modal, Compound Affective Database for Dynamic Facial Expression
               Recognition in the Wild},
  author    = {Liu, Yuanyuan and Dai, Wei and Feng, Chuanxu and Wang, Wenbin and Yin, Guanghao and
               Zeng, Jiabei and Shan, Shiguang},
  booktitle = {Proceedings of the 30th ACM International Conference on Multimedia},
  year      = {2022}
}
""",
    licence=_LICENCE.format("MAFW"),
)

FACTS: Mapping[str, DferFacts] = {"dfew": DFEW, "mafw": MAFW}


def facts(dataset: str) -> DferFacts:
    """The facts of "dfew" or "mafw"; ValueError naming the choices otherwise."""
    try:
        return FACTS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; DFEW/MAFW facts exist for {', '.join(FACTS)}") from None


def mafw_word(text: str) -> Optional[str]:
    """A MAFW class word as written in a list or label file (any case, known misspellings), or None."""
    word = text.strip().lower()
    word = MAFW_ALIASES.get(word, word)
    return word if word in MAFW_CLASSES else None


def all_label_orders() -> Dict[str, Tuple[str, ...]]:
    """Every label-order name any dataset knows (for --label-order choices)."""
    return {name: order for f in FACTS.values() for name, order in f.orders.items()}


def _check_tables() -> None:
    # The tables are transcribed by hand; guard the transcription at import.
    for dataset in FACTS.values():
        assert len(set(dataset.classes)) == len(dataset.classes)
        for name, order in dataset.orders.items():
            assert sorted(order) == sorted(dataset.classes), (dataset.name, name)
        assert dataset.default_order in dataset.orders and set(dataset.descriptions) == set(dataset.configs)
        assert sum(dataset.fold1_sizes) == dataset.benchmark_clips
    assert len(MAFW_CLASSES) == 11 and len(DFEW_CLASSES) == 7
    # DFER-CLIP's MAFW order is DFEW's order with four classes appended.
    assert _MAFW_ORDERS["dfer-clip"][:7] == tuple(_dfew_as_mafw(w) for w in DFEW_CLASSES)
    assert all(COMPOUND_SEPARATOR not in word for word in MAFW_CLASSES)
    assert set(PUBLISHED_FOLDS) == set(FACTS)


def _dfew_as_mafw(word: str) -> str:
    return {"Happy": "happiness", "Sad": "sadness", "Neutral": "neutral", "Angry": "anger",
            "Surprise": "surprise", "Disgust": "disgust", "Fear": "fear"}[word]


_check_tables()
