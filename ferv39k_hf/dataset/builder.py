"""The datasets builder: the package's one implementation of archive -> rows.

``Ferv39k`` is a ``GeneratorBasedBuilder`` used directly (datasets >= 4 no
longer runs loading scripts): ``ferv39k_hf.load(root)`` prepares it and
returns a ``DatasetDict``. The Parquet export and the datasets < 4 loading
script both go through :func:`clip_features` and :func:`make_example`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import datasets

from ferv39k_hf.archive.annotations import ClipRecord, Problem
from ferv39k_hf.archive.clipfiles import ClipDamaged, ClipReader
from ferv39k_hf.archive.layout import Layout, find_layout
from ferv39k_hf.archive.listcheck import check_frame_counts
from ferv39k_hf.archive.lists import FORMATS as LIST_FORMATS
from ferv39k_hf.archive.lists import ListError, SplitLists, open_lists
from ferv39k_hf.archive.outdirs import check_outside_archive
from ferv39k_hf.archive.splits import plan_splits
from ferv39k_hf.dataset import fingerprint
from ferv39k_hf.dataset.diskspace import check_free_space, is_disk_full, needed_bytes, payload_bytes, shortage
from ferv39k_hf.errors import BuildError
from ferv39k_hf.taxonomy import (
    CITATION,
    CONFIG_NAMES,
    DEFAULT_LABEL_ORDER,
    HOMEPAGE,
    LICENSE_SUMMARY,
    SCENARIOS,
    SCENE_TO_SCENARIO,
    SCENES,
    label_names,
)

logger = logging.getLogger(__name__)

_DESCRIPTIONS = {
    "faces": "Face-crop frames of each clip (2_ClipsforFaceCrop), the benchmark input.",
    "scenes": "Uncropped scene frames of each clip (3_ClipsforScenImages).",
    "videos": "The original labelled mp4 clips (0_7_LabelClips), decoded on demand with PyAV.",
}


def _list_of(feature: Any) -> Any:
    # datasets >= 4 spells a variable-length list List; older releases Sequence.
    list_type = getattr(datasets, "List", None)
    return list_type(feature) if list_type is not None else datasets.Sequence(feature)


def clip_features(config_name: str = "faces", label_order: str = DEFAULT_LABEL_ORDER) -> datasets.Features:
    """The columns of every config, in order."""
    if config_name not in CONFIG_NAMES:
        raise ValueError(f"unknown config {config_name!r}; choose one of {CONFIG_NAMES}")
    columns: Dict[str, Any] = {
        "clip_id": datasets.Value("string"),
        "scene": datasets.ClassLabel(names=list(SCENES)),
        "scenario": datasets.ClassLabel(names=list(SCENARIOS)),
        "label": datasets.ClassLabel(names=label_names(label_order)),
        "num_frames": datasets.Value("int32"),
    }
    if config_name == "videos":
        columns["video"] = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    else:
        columns["frames"] = _list_of(datasets.Image())
    return datasets.Features(columns)


def make_example(record: ClipRecord, fields: Dict[str, Any], label_order: str = DEFAULT_LABEL_ORDER) -> Dict[str, Any]:
    """A row: the record's metadata as class indices plus what ClipReader read."""
    example: Dict[str, Any] = {
        "clip_id": record.clip_id,
        "scene": SCENES.index(record.scene),
        "scenario": SCENARIOS.index(SCENE_TO_SCENARIO[record.scene]),
        "label": label_names(label_order).index(record.emotion),
    }
    example.update(fields)
    return example


def read_or_skip(reader: ClipReader, record: ClipRecord, on_error: str,
                 skipped: List[Problem]) -> Optional[Dict[str, Any]]:
    """The clip's fields, or None for a damaged clip under ``on_error="skip"``, which joins ``skipped``.

    Under ``on_error="raise"`` a damaged clip is a BuildError naming the clip,
    its split file and line, and what is wrong.
    """
    try:
        return reader.read(record)
    except ClipDamaged as err:
        if on_error == "raise":
            raise BuildError(f"clip {record.clip_id} ({record.split} split, {record.where}): {err}") from None
        skipped.append(Problem(record.clip_id, record.split, record.line, str(err), record.source))
        return None


@dataclass
class Ferv39kConfig(datasets.BuilderConfig):
    """Options of a FERV39k build; ``name`` is faces, scenes or videos.

    Args:
        name: ``"faces"`` (face-crop frames, the benchmark input), ``"scenes"``
            (uncropped scene frames) or ``"videos"`` (the original mp4 clips).
        label_order: ``"alphabetical"`` (Angry=0 ... Surprise=6) or ``"dfew"``
            (Happy=0 ... Fear=6); the order is recorded in the ``label`` ClassLabel.
        validation_fraction: in [0, 1): carve a seeded ``validation`` split out of
            train, stratified by scene and class (not an official split).
        seed: seed of that carve-out.
        on_error: ``"raise"`` stops at the first damaged clip; ``"skip"`` leaves it
            out and records it in the builder's ``skipped`` list.
        frames: ``"copy"`` stores the archive's JPEG bytes; ``"reference"`` only
            their paths (an unpacked archive on this machine).
        archive_fingerprint, builder_version: the cache key, filled in by
            :class:`Ferv39k` from ``data_dir`` (see ``ferv39k_hf/dataset/fingerprint.py``).

    Raises:
        ValueError: an unknown ``label_order`` or ``on_error``.
    """

    label_order: str = DEFAULT_LABEL_ORDER
    validation_fraction: float = 0.0
    seed: int = 0
    on_error: str = "raise"
    frames: str = "copy"
    # Community split lists in place of the official split files (see archive/lists.py);
    # their content is part of archive_fingerprint, so an edited list is never served an old cache.
    train_list: Optional[str] = None
    test_list: Optional[str] = None
    list_format: Optional[str] = None
    # The cache key (datasets hashes these into the cache folder's name): the archive's
    # content identity, and the version of the code that makes rows (see fingerprint.py).
    # Ferv39k.__init__ fills both in when a data_dir is given.
    archive_fingerprint: Optional[str] = None
    builder_version: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        label_names(self.label_order)  # validates
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if (self.train_list is None) != (self.test_list is None):
            raise ListError("train_list and test_list go together: give both lists (train and test)")
        if self.list_format is not None and self.list_format not in LIST_FORMATS:
            raise ListError(f"unknown list_format {self.list_format!r}; choose one of {', '.join(LIST_FORMATS)}")


# The release only (datasets.Version takes x.y.z); the source hash is in the config's builder_version.
_VERSION = datasets.Version(fingerprint.RELEASE)


class Ferv39k(datasets.GeneratorBasedBuilder):
    """FERV39k from a hand-downloaded archive (``data_dir``: its root, folders or zips).

    A ``datasets.GeneratorBasedBuilder``, used directly (datasets >= 4 runs no
    loading scripts). Keyword arguments are datasets' (``config_name``,
    ``data_dir``, ``cache_dir``) and the fields of :class:`Ferv39kConfig`. The
    splits are ``train`` and ``test`` as the split files list them (plus
    ``validation`` with ``validation_fraction``); the columns are ``clip_id``
    (``"Scene/Emotion/NNNN"``), ``scene`` (ClassLabel of the 22 scenes),
    ``scenario`` (ClassLabel of 4), ``label`` (ClassLabel of 7), ``num_frames``
    (int32) and ``frames`` (a list of Image, the archive's JPEG bytes in frame
    order) or, for ``videos``, ``video`` (``{"bytes", "path"}`` of the mp4).
    :func:`load` does the same in one call and guards the cache.

    Raises:
        ferv39k_hf.errors.BuildError: no ``data_dir`` (the data cannot be downloaded).
        ferv39k_hf.errors.LayoutError: no FERV39k part or split file under ``data_dir``.

    Example::

        builder = Ferv39k(config_name="faces", data_dir="/data/FERV39k", label_order="dfew")
        builder.download_and_prepare()
        ds = builder.as_dataset()          # DatasetDict with train and test
    """

    BUILDER_CONFIG_CLASS = Ferv39kConfig
    VERSION = _VERSION
    BUILDER_CONFIGS = [Ferv39kConfig(name=name, version=_VERSION, description=_DESCRIPTIONS[name])
                       for name in CONFIG_NAMES]
    DEFAULT_CONFIG_NAME = "faces"
    DEFAULT_WRITER_BATCH_SIZE = 64  # rows hold tens of frames; keep writer batches small

    def __init__(self, *args: Any, layout: Optional[Layout] = None, lists: Optional[SplitLists] = None,
                 **kwargs: Any) -> None:
        # datasets names the cache folder inside __init__, from the config kwargs, so the key goes
        # in first. The loading script arrives here with data_dir only; load() passes the fingerprint,
        # and the layout and lists it found (not config fields: a config must stay cheap to hash).
        self._layout, self._lists = layout, lists
        name = kwargs.get("config_name") or self.DEFAULT_CONFIG_NAME
        name = getattr(name, "name", name)  # a BuilderConfig object, or its name
        if kwargs.get("data_dir") and kwargs.get("archive_fingerprint") is None and name in CONFIG_NAMES:
            self._layout = find_layout(kwargs["data_dir"])
            # read once: the fingerprint and the rows come from the same bytes of the lists
            self._lists = open_lists(kwargs.get("train_list"), kwargs.get("test_list"), kwargs.get("list_format"))
            kwargs["archive_fingerprint"] = fingerprint.archive_fingerprint(self._layout, name, self._lists)
        if kwargs.get("builder_version") is None:
            kwargs["builder_version"] = fingerprint.BUILDER_VERSION  # looked up per build: a patched one counts
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTIONS[self.config.name],
            features=clip_features(self.config.name, self.config.label_order),
            homepage=HOMEPAGE,
            citation=CITATION,
            license=LICENSE_SUMMARY,
        )

    def _split_generators(self, dl_manager: Any) -> List[datasets.SplitGenerator]:
        if not self.config.data_dir:
            raise BuildError(
                "FERV39k is not downloadable: apply to the authors, download the archive by hand and pass its "
                "root as data_dir (ferv39k_hf.load('/path/to/FERV39k'))."
            )
        # load() found the layout already; discovery of a zipped archive is not free.
        layout = self._layout or find_layout(self.config.data_dir)
        lists = self._lists
        if lists is None and self.config.train_list is not None:
            lists = open_lists(self.config.train_list, self.config.test_list, self.config.list_format)
        plan = plan_splits(
            layout,
            validation_fraction=self.config.validation_fraction,
            seed=self.config.seed,
            on_error=self.config.on_error,
            lists=lists,
        )
        self.skipped: List[Problem] = list(plan.problems)
        for problem in plan.problems:
            logger.warning("skipped %s", problem)
        # A list's frame counts are never used; the ones that disagree with the archive are reported.
        listed = [r for records in plan.records.values() for r in records]
        self.frame_count_mismatches, note = check_frame_counts(lists, layout, listed)
        for message in self.frame_count_mismatches + ([note] if note else []):
            logger.warning("%s", message)
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"layout": layout, "records": records})
            for split, records in plan.records.items()
        ]

    def _generate_examples(self, layout: Layout, records: List[ClipRecord]) -> Iterator[Tuple[str, Dict[str, Any]]]:
        reader = ClipReader(layout, kind=self.config.name, frames=self.config.frames)
        for record in records:
            fields = read_or_skip(reader, record, self.config.on_error, self.skipped)
            if fields is None:
                logger.warning("skipped %s", self.skipped[-1])
                continue
            yield record.clip_id, make_example(record, fields, self.config.label_order)


def load(
    root: str,
    config: Optional[str] = None,
    *,
    label_order: Optional[str] = None,
    validation_fraction: float = 0.0,
    seed: int = 0,
    on_error: str = "raise",
    cache_dir: Optional[str] = None,
    num_proc: Optional[int] = None,
    train_list: Optional[str] = None,
    test_list: Optional[str] = None,
    list_format: Optional[str] = None,
    dataset: Optional[str] = None,
    fold: Optional[int] = None,
) -> datasets.DatasetDict:
    """Read an archive into a DatasetDict through :class:`Ferv39k`, without the Parquet step.

    DFEW and MAFW archives (told from the archive, or ``dataset="dfew"``/``"mafw"``) are read by
    :func:`ferv39k_hf.dataset.dfer_load.load_dfer`: the ``clips`` split, or with ``fold=k`` that
    fold's ``train`` and ``test``; ``config`` and ``label_order`` then take their names (docs/dfew-mafw.md).

    The prepared Arrow files are cached (``cache_dir``, default datasets' own),
    keyed on the archive's content identity and the builder's version: a
    changed archive, or a package that reads it differently, gets a new entry.

    Args:
        root: the archive root as downloaded: folders, zips or drive export
            folders, at any nesting.
        config: ``"faces"``, ``"scenes"`` or ``"videos"``.
        label_order: ``"alphabetical"`` (default) or ``"dfew"``.
        validation_fraction: in [0, 1): a seeded ``validation`` split carved out
            of train, stratified by scene and class (not an official split).
        seed: seed of that carve-out.
        on_error: ``"raise"`` (default) stops at the first damaged clip;
            ``"skip"`` leaves damaged clips out and logs each one.
        cache_dir: where datasets keeps the prepared Arrow files (default
            ``HF_DATASETS_CACHE``); refused when it is, holds or lies in the archive.
        num_proc: processes for preparing (datasets' ``num_proc``).
        train_list, test_list: community split lists to read the splits from
            (both or neither): official, DFER-CLIP, MAE-DFER or S2D format, told
            from the content unless ``list_format`` names one. Their content is
            part of the cache key; every line's class is checked against its
            clip's folder.
        list_format: ``None`` (detect), ``"official"``, ``"dfer-clip"``,
            ``"mae-dfer"`` or ``"s2d"``.

    Returns:
        A ``datasets.DatasetDict`` with ``train`` and ``test`` (and ``validation``),
        the columns of :class:`Ferv39k`.

    Raises:
        ferv39k_hf.errors.LayoutError: no FERV39k part or split file under ``root``.
        ferv39k_hf.archive.annotations.AnnotationError: a split list line that cannot be
            read, or whose class disagrees with its clip's folder (file and line named).
        ferv39k_hf.archive.lists.ListError: lists given wrongly (one without the
            other) or a list whose format cannot be told from its content.
        ferv39k_hf.errors.BuildError: a damaged clip under ``on_error="raise"``
            (naming the clip, split file and line), or too little free disk.

    Example::

        ds = ferv39k_hf.load("/data/FERV39k", config="faces", label_order="dfew")
        ds["train"][0]["clip_id"]          # e.g. 'Action/Angry/0000'
        ds = ferv39k_hf.load("/data/FERV39k", train_list="FERV39K_train.txt", test_list="FERV39K_test.txt")
    """
    from ferv39k_hf.dataset.dfer_build import resolve_dataset  # DFEW/MAFW hook; a lazy import: it imports this module

    if resolve_dataset(root, dataset) != "ferv39k":
        from ferv39k_hf.dataset.dfer_load import load_dfer

        return load_dfer(root, resolve_dataset(root, dataset), config, label_order=label_order, fold_k=fold,
                         on_error=on_error, cache_dir=cache_dir, num_proc=num_proc)
    if fold is not None:
        raise BuildError("FERV39k has one official train/test split, no folds: leave fold out")
    config, label_order = config or "faces", label_order or DEFAULT_LABEL_ORDER  # FERV39k's defaults
    root = os.path.abspath(os.fspath(root))
    # The prepared Arrow files (and datasets' locks) must not land in the archive.
    cache_what = "cache_dir" if cache_dir is not None else "datasets' cache (HF_DATASETS_CACHE)"
    check_outside_archive(cache_dir if cache_dir is not None else datasets.config.HF_DATASETS_CACHE, root, cache_what)
    layout = find_layout(root)
    lists = open_lists(train_list, test_list, list_format)
    paths = {} if lists is None else {"train_list": lists.files[0].path, "test_list": lists.files[1].path,
                                      "list_format": list_format}
    builder = Ferv39k(
        config_name=config,
        data_dir=root,
        cache_dir=cache_dir,
        label_order=label_order,
        validation_fraction=validation_fraction,
        seed=seed,
        on_error=on_error,
        archive_fingerprint=fingerprint.archive_fingerprint(layout, config, lists),
        layout=layout,
        lists=lists,
        **paths,
    )
    _prepare_with_space(builder, layout, config, on_error, num_proc, lists)
    return builder.as_dataset()


def _prepare_with_space(builder: Ferv39k, layout: Layout, config: str, on_error: str, num_proc: Optional[int],
                        lists: Optional[SplitLists] = None) -> None:
    """``download_and_prepare``, refused at once when datasets' cache lacks the room, and with the same figures
    when the disk fills while it writes (datasets removes its incomplete folder)."""
    what, where = f"loading {config} into datasets' cache", builder.cache_dir
    needed = 0
    if not os.path.exists(os.path.join(where, datasets.config.DATASET_INFO_FILENAME)):  # else nothing is written
        records = plan_splits(layout, on_error=on_error, lists=lists).records.values()
        needed = needed_bytes(payload_bytes(layout.part(config), records))
        check_free_space(what, where, needed)
    try:
        builder.download_and_prepare(num_proc=num_proc)
    except Exception as err:  # datasets wraps its writer's OSError in its own error
        if is_disk_full(err):
            raise BuildError(f"the disk filled while datasets wrote its cache: {shortage(what, where, needed)}") \
                from None
        raise
