"""``ferv39k_hf.load`` for DFEW and MAFW: the package builder, prepared from the archive, then a fold's views."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import datasets
import xxhash

from ferv39k_hf.archive.clipfiles import ClipReader
from ferv39k_hf.archive.dfer_folds import FoldClip, plan_folds
from ferv39k_hf.archive.dfer_layout import DferLayout, find_dfer_layout
from ferv39k_hf.archive.outdirs import check_outside_archive
from ferv39k_hf.dataset import fingerprint
from ferv39k_hf.dataset.builder import Ferv39k, Ferv39kConfig, read_or_skip
from ferv39k_hf.dataset.dfer_rows import dfer_features, fold, make_dfer_example
from ferv39k_hf.dfer_taxonomy import CLIPS_SPLIT, facts
from ferv39k_hf.errors import BuildError


@dataclass
class DferConfig(Ferv39kConfig):
    """Options of a DFEW or MAFW build: ``name`` is one of the dataset's configs (see dfer_taxonomy)."""

    dataset: str = "dfew"
    captions: bool = False

    def __post_init__(self) -> None:
        datasets.BuilderConfig.__post_init__(self)
        info = facts(self.dataset)
        if self.name not in info.configs:
            raise BuildError(f"unknown {info.title} config {self.name!r}; choose one of {', '.join(info.configs)}")
        info.label_names(self.label_order)  # validates


class DferBuilder(Ferv39k):
    """The package builder reading a DFEW or MAFW archive: one split ``clips``, the folds as columns."""

    BUILDER_CONFIG_CLASS = DferConfig
    BUILDER_CONFIGS: List[DferConfig] = []
    DEFAULT_CONFIG_NAME = None

    def _info(self) -> datasets.DatasetInfo:
        info = facts(self.config.dataset)
        return datasets.DatasetInfo(
            description=info.descriptions[self.config.name],
            features=dfer_features(self.config.dataset, self.config.name, self.config.label_order,
                                   self.config.captions),
            homepage=info.homepage, citation=info.citation, license=info.licence,
        )

    def _split_generators(self, dl_manager: Any) -> List[datasets.SplitGenerator]:
        layout = getattr(self, "_dfer_layout", None) or find_dfer_layout(self.config.data_dir, self.config.dataset)
        plan = plan_folds(layout, self.config.name, self.config.on_error)
        self.skipped = list(plan.problems)
        self.unlisted = list(plan.unlisted)
        return [datasets.SplitGenerator(name=CLIPS_SPLIT, gen_kwargs={"layout": layout, "records": plan.records})]

    def _generate_examples(self, layout: DferLayout, records: List[FoldClip]) -> Iterator[Tuple[str, Dict[str, Any]]]:
        reader = ClipReader(layout, kind=self.config.name, frames=self.config.frames)
        cfg = self.config
        for record in records:
            fields = read_or_skip(reader, record, cfg.on_error, self.skipped)
            if fields is not None:
                yield record.clip_id, make_dfer_example(record, fields, cfg.dataset, cfg.name, cfg.label_order,
                                                        cfg.captions)


def dfer_fingerprint(layout: DferLayout, config: str) -> str:
    """What a build of ``config`` reads, by identity: every list file and every clip file (sizes and times, CRCs)."""
    digest = xxhash.xxh3_128()
    for item in sorted(layout.lists, key=lambda f: f.display):
        digest.update(f"list {item.display}\0{item.ref.identity()}\0".encode())
    part = layout.part(config)
    for clip_id in part.clip_ids():
        for ref in part.clip_files(clip_id):
            digest.update(f"{clip_id}\0{ref.name}\0{ref.identity()}\0".encode())
    return digest.hexdigest()


def load_dfer(root: str, dataset: str, config: Optional[str] = None, *, label_order: Optional[str] = None,
              fold_k: Optional[int] = None, on_error: str = "raise", cache_dir: Optional[str] = None,
              num_proc: Optional[int] = None) -> datasets.DatasetDict:
    """A DFEW or MAFW archive as a DatasetDict: ``clips``, or with ``fold_k`` that fold's ``train`` and ``test``."""
    root = os.path.abspath(os.fspath(root))
    info = facts(dataset)
    config = config or info.configs[0]
    order = label_order or info.default_order
    check_outside_archive(cache_dir if cache_dir is not None else datasets.config.HF_DATASETS_CACHE, root,
                          "cache_dir" if cache_dir is not None else "datasets' cache (HF_DATASETS_CACHE)")
    layout = find_dfer_layout(root, dataset)
    plan = plan_folds(layout, config, on_error)  # fails early, naming file and line
    captions = config != "videos" and any(any(r.captions) for r in plan.records)
    builder = DferBuilder(config_name=config, data_dir=root, cache_dir=cache_dir, dataset=dataset,
                          label_order=order, on_error=on_error, captions=captions,
                          archive_fingerprint=dfer_fingerprint(layout, config),
                          builder_version=fingerprint.BUILDER_VERSION)
    builder._dfer_layout = layout
    builder.download_and_prepare(num_proc=num_proc)
    ds = builder.as_dataset()
    return ds if fold_k is None else fold(ds, fold_k)
