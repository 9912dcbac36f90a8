"""The facts of FERV39k, in one place.

Class words, the two index orders in use, the 22 scenes as the archive spells
them, the scene-to-scenario map and the official clip counts (Wang et al.,
CVPR 2022). Nothing else in the package spells these out again.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

# Class words as the split files write them, in alphabetical order (what
# sorting the emotion folders gives). This is the package's default order.
CLASS_WORDS: Tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")

# The order DFEW-derived codebases (MAE-DFER, DFER-CLIP, EmoCLIP, PTH-Net) use.
DFEW_ORDER: Tuple[str, ...] = ("Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear")

LABEL_ORDERS: Mapping[str, Tuple[str, ...]] = {"alphabetical": CLASS_WORDS, "dfew": DFEW_ORDER}
DEFAULT_LABEL_ORDER = "alphabetical"

# The 4 scenarios that group the 22 scenes, in the dataset paper's order.
SCENARIOS: Tuple[str, ...] = (
    "Daily Life",
    "Weak-Interactive Shows",
    "Strong-Interactive Activities",
    "Anomaly Issues",
)

_SCENARIO_SCENES: Mapping[str, Tuple[str, ...]] = {
    "Daily Life": ("Conflict", "School", "DailyLife", "Argue", "Medicine", "Social"),
    "Weak-Interactive Shows": ("Action", "ScholarReport", "Speech", "Liveshow", "ElegantArt", "Talkshow"),
    "Strong-Interactive Activities": ("Business", "Experiment", "OfficialEvent", "Crime", "Interview", "Contest"),
    "Anomaly Issues": ("History", "Terror", "War", "Crisis"),
}

# The 22 scene folder names exactly as spelled in the archive, sorted.
SCENES: Tuple[str, ...] = tuple(sorted(s for scenes in _SCENARIO_SCENES.values() for s in scenes))

# Each scene's scenario.
SCENE_TO_SCENARIO: Mapping[str, str] = {
    scene: scenario for scenario, scenes in _SCENARIO_SCENES.items() for scene in scenes
}

SPLITS: Tuple[str, ...] = ("train", "test")

# Official clips per scene, in CLASS_WORDS order (Angry .. Surprise).
_TRAIN_COUNTS: Mapping[str, Tuple[int, ...]] = {
    "Action": (43, 30, 26, 276, 163, 54, 48),
    "Argue": (587, 75, 56, 562, 472, 208, 162),
    "Business": (182, 132, 24, 279, 405, 234, 162),
    "Conflict": (592, 186, 114, 208, 348, 367, 175),
    "Contest": (202, 110, 76, 507, 476, 370, 176),
    "Crime": (203, 114, 106, 195, 418, 332, 126),
    "Crisis": (156, 44, 92, 192, 372, 231, 106),
    "DailyLife": (512, 24, 110, 386, 368, 400, 68),
    "ElegantArt": (181, 56, 42, 140, 220, 282, 69),
    "Experiment": (32, 8, 16, 136, 215, 8, 28),
    "History": (396, 68, 164, 244, 424, 724, 131),
    "Interview": (241, 72, 29, 545, 483, 232, 73),
    "Liveshow": (117, 88, 14, 215, 300, 88, 81),
    "Medicine": (78, 28, 57, 54, 164, 128, 40),
    "OfficialEvent": (279, 68, 17, 278, 330, 86, 78),
    "ScholarReport": (260, 116, 96, 419, 405, 188, 125),
    "School": (422, 141, 130, 101, 292, 322, 199),
    "Social": (152, 104, 22, 118, 332, 76, 88),
    "Speech": (256, 121, 88, 271, 416, 185, 128),
    "Talkshow": (189, 72, 40, 383, 387, 151, 164),
    "Terror": (316, 88, 265, 118, 366, 377, 147),
    "War": (510, 88, 96, 227, 434, 480, 128),
}

_TEST_COUNTS: Mapping[str, Tuple[int, ...]] = {
    "Action": (11, 8, 7, 70, 41, 14, 13),
    "Argue": (147, 19, 15, 141, 118, 52, 41),
    "Business": (46, 33, 7, 70, 102, 59, 41),
    "Conflict": (149, 47, 29, 53, 87, 92, 44),
    "Contest": (51, 28, 19, 127, 120, 93, 45),
    "Crime": (51, 29, 27, 49, 105, 84, 32),
    "Crisis": (40, 11, 24, 48, 93, 58, 27),
    "DailyLife": (128, 7, 28, 97, 93, 101, 17),
    "ElegantArt": (46, 14, 11, 36, 56, 71, 18),
    "Experiment": (8, 2, 4, 34, 54, 3, 8),
    "History": (99, 17, 41, 61, 106, 182, 33),
    "Interview": (61, 19, 8, 137, 121, 59, 19),
    "Liveshow": (30, 22, 4, 54, 75, 22, 21),
    "Medicine": (20, 8, 15, 14, 42, 33, 11),
    "OfficialEvent": (70, 17, 5, 70, 83, 22, 20),
    "ScholarReport": (66, 29, 24, 105, 102, 47, 32),
    "School": (106, 36, 33, 26, 73, 81, 50),
    "Social": (39, 27, 6, 30, 84, 20, 23),
    "Speech": (64, 31, 22, 68, 105, 47, 32),
    "Talkshow": (48, 18, 11, 96, 97, 38, 42),
    "Terror": (79, 22, 67, 30, 92, 95, 37),
    "War": (128, 23, 24, 57, 109, 120, 32),
}

# All official clips (Wang et al., CVPR 2022). Documents refer to the counts here rather than repeat them.
OFFICIAL_TOTAL = 38935
# Official clips per split.
OFFICIAL_SPLIT_TOTALS: Mapping[str, int] = {"train": 31088, "test": 7847}

# Frames per face-crop clip over all official clips: {frames: clips}.
FRAMES_PER_CLIP: Mapping[int, int] = {
    8: 26, 9: 27, 10: 32, 11: 74, 12: 1703, 13: 274, 14: 965, 15: 969, 16: 426, 17: 1256,
    18: 1811, 19: 686, 20: 1120, 21: 1101, 22: 417, 23: 1279, 24: 1513, 25: 2270, 26: 1104,
    27: 1330, 28: 1791, 29: 1295, 30: 1502, 31: 1906, 32: 1298, 33: 1447, 34: 1642, 35: 1064,
    36: 1117, 37: 1060, 38: 878, 39: 844, 40: 948, 41: 607, 42: 534, 43: 1001, 44: 542,
    45: 366, 46: 465, 47: 245,
}

# The configs, one per part of the archive that holds clips (a dataset's taxonomy names its own).
CONFIG_NAMES: Tuple[str, ...] = ("faces", "scenes", "videos")

# Archive part folder names, by the config that reads them.
PART_FOLDERS: Mapping[str, str] = {
    "videos": "0_7_LabelClips",
    "faces": "2_ClipsforFaceCrop",
    "scenes": "3_ClipsforScenImages",
    "setups": "4_setups",
}
SPLIT_FILE_NAMES: Mapping[str, str] = {"train": "train_All.csv", "test": "test_All.csv"}

HOMEPAGE = "https://wangyanckxx.github.io/Proj_CVPR2022_FERV39k.html"
CITATION = """\
@inproceedings{wang2022ferv39k,
  title     = {FERV39k: A Large-Scale Multi-Scene Dataset for Facial Expression Recognition in Videos},
  author    = {Wang, Yan and Sun, Yixuan and Huang, Yiwen and Liu, Zhongying and Gao, Shuyong and
               Zhang, Wei and Ge, Weifeng and Zhang, Wenqiang},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {20922--20931},
  year      = {2022}
}
"""
LICENSE_SUMMARY = (
    "FERV39k is licence-gated: non-commercial research only. No portion of the images or data derived "
    "from them may be reproduced, distributed or published; copies are for internal use at one site of "
    "one organization, and the authors may withdraw access. Apply to the authors for the archive."
)
# What the faces in the clips mean for whoever holds the data or a model trained on it;
# the dataset card and every model card print this one text.
_PERSONAL_DATA = """\
Every {title} clip shows the face of a real, identifiable person, cut from films, TV series and shows.
Those people were not asked whether their faces could be used to train or test expression recognizers.

- Treat the frames as personal data. Keep them under the licence's terms: non-commercial research only,
  no redistribution of any frame or of data derived from the frames, and a built copy only in a **private**
  repository of your own organization. Delete your copies when your access ends or is withdrawn.
- The clips were gathered from available footage, not sampled to represent any population, and the labels
  are annotators' readings of mostly performed expressions. Expect a model's accuracy to differ between
  groups of people, and measure it on the people it will be used on before relying on it.
- A model trained on {title} outputs which of {classes} labels annotators would probably have given a clip.
  That is not a fact about what a person feels or intends; do not use it to judge, screen or monitor
  individuals.
"""


def personal_data(title: str = "FERV39k", classes: int = 7) -> str:
    """What a model card says about the faces in the data (FERV39k's, or DFEW's and MAFW's with their titles)."""
    return _PERSONAL_DATA.format(title=title, classes=classes)


PERSONAL_DATA = personal_data()


def label_names(order: str = DEFAULT_LABEL_ORDER) -> List[str]:
    """The 7 class words in the given index order ("alphabetical" or "dfew").

    Args:
        order: ``"alphabetical"`` (the package's default, what sorting the
            emotion folders gives) or ``"dfew"`` (the order of DFEW-derived codebases).

    Returns:
        A new list of 7 str: the word of class id 0, 1, ..., 6.

    Raises:
        ValueError: an unknown order.

    Example:
        >>> label_names("dfew")[:3]
        ['Happy', 'Sad', 'Neutral']
        >>> label_names().index("Neutral")
        4
    """
    try:
        return list(LABEL_ORDERS[order])
    except KeyError:
        raise ValueError(f"unknown label order {order!r}; choose one of {sorted(LABEL_ORDERS)}") from None


def official_counts(split: str) -> Dict[Tuple[str, str], int]:
    """Official clips per (scene, class word) for "train", "test" or "all".

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (their sum).

    Returns:
        A dict (scene, class word) -> int, 22 x 7 entries.

    Raises:
        ValueError: an unknown split.

    Example:
        >>> counts = official_counts("test")
        >>> sum(counts.values()) == OFFICIAL_SPLIT_TOTALS["test"]
        True
        >>> counts[("Crime", "Angry")]
        51
    """
    if split == "all":
        train, test = official_counts("train"), official_counts("test")
        return {key: train[key] + test[key] for key in train}
    table = {"train": _TRAIN_COUNTS, "test": _TEST_COUNTS}.get(split)
    if table is None:
        raise ValueError(f"unknown split {split!r}; choose train, test or all")
    return {(scene, word): n for scene, row in table.items() for word, n in zip(CLASS_WORDS, row)}


def _check_tables() -> None:
    # The tables above are transcribed by hand; guard the transcription at import.
    assert len(SCENES) == 22 and set(_TRAIN_COUNTS) == set(SCENES) == set(_TEST_COUNTS)
    for split, total in OFFICIAL_SPLIT_TOTALS.items():
        assert sum(official_counts(split).values()) == total, split
    assert sum(FRAMES_PER_CLIP.values()) == OFFICIAL_TOTAL
    assert sum(k * v for k, v in FRAMES_PER_CLIP.items()) == 1090633
    assert set(CONFIG_NAMES) <= set(PART_FOLDERS)


_check_tables()
