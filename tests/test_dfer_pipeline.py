"""The clip pipeline, a model step and pipeline("video-classification") on DFEW and MAFW rows, unchanged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets
import pytest
import torch

import ferv39k_hf
from ferv39k_hf import VideoClipTransform
from ferv39k_hf.dataset.export import build_dataset_folder
from ferv39k_hf.synthetic_dfer import write_dfer_sample


def _tiny_model(labels):
    from transformers import AutoConfig, AutoModelForVideoClassification

    torch.manual_seed(0)
    config = AutoConfig.for_model("videomae", hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, image_size=32, num_frames=4, patch_size=16, tubelet_size=2,
                                  id2label=dict(enumerate(labels)), label2id={w: i for i, w in enumerate(labels)})
    return AutoModelForVideoClassification.from_config(config)


@pytest.mark.parametrize("dataset", ["dfew", "mafw"])
def test_fold_rows_through_the_clip_transform_and_a_training_step(tmp_path: Path, dataset: str) -> None:
    root = tmp_path / "archive"
    write_dfer_sample(root, dataset, per_class=1, videos=False)
    build_dataset_folder(root, tmp_path / "built")
    split = ferv39k_hf.fold(datasets.load_dataset(str(tmp_path / "built")), 2)
    train = ferv39k_hf.undecoded_frames(split["train"])
    labels = train.features["label"].names
    train.set_transform(VideoClipTransform(num_frames=4, size=32, train=True, seed=0))
    batch = train[:3]
    assert batch["pixel_values"].shape == (3, 4, 3, 32, 32)
    assert batch["labels"].tolist() == split["train"].select(range(3))["label"]
    model = _tiny_model(labels)
    out = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.logits.shape == (3, len(labels))
    test = ferv39k_hf.undecoded_frames(split["test"])
    test.set_transform(VideoClipTransform(num_frames=4, size=32, train=False))
    assert test[:1]["pixel_values"].shape == (1, 4, 3, 32, 32)


def test_pipeline_classifies_a_dfew_video(tmp_path: Path) -> None:
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("with torchvision the pipeline takes the video processor, which decodes with torchcodec")
    from transformers import pipeline

    try:
        from transformers import VideoMAEImageProcessorPil as Processor  # transformers 5: no torchvision needed
    except ImportError:  # transformers 4
        from transformers import VideoMAEImageProcessor as Processor

    root = tmp_path / "archive"
    write_dfer_sample(root, "dfew", per_class=1, videos=True)
    build_dataset_folder(root, tmp_path / "videos", config="videos")
    ds = datasets.load_dataset(str(tmp_path / "videos"))["clips"]
    labels = ds.features["label"].names
    folder = tmp_path / "ckpt"
    _tiny_model(labels).save_pretrained(folder)
    Processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    video = tmp_path / "clip.mp4"
    video.write_bytes(ds[0]["video"]["bytes"])
    ranked = pipeline("video-classification", model=str(folder))(str(video), top_k=len(labels))
    assert sorted(r["label"] for r in ranked) == sorted(labels) == sorted(ferv39k_hf.dfer_taxonomy.DFEW_CLASSES)
