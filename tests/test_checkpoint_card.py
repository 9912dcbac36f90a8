"""What a checkpoint folder says about how it was made: model-index in the Hub's metric terms, the clip
protocol where transformers' image and video processors read it, and the personal-data section of both cards."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from ferv39k_hf.clips import protocol
from ferv39k_hf.dataset import hub, modelcard
from ferv39k_hf.taxonomy import PERSONAL_DATA, SCENARIOS, label_names

PROTOCOL = {"num_frames": 4, "image_size": 32, "sampling": "segment", "window_stride": 1, "test_views": "2x2",
            "mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225], "dataset_config": "faces",
            "label_order": "dfew"}


def _results(scenarios=SCENARIOS):
    per = {s: {"war": 0.40 + 0.01 * i, "uar": 0.30 + 0.01 * i, "support": 10 + i} for i, s in enumerate(scenarios)}
    return {"war": 0.5234, "uar": 0.4321, "support": {w: 6 for w in label_names()}, "per_scenario": per}


def _card(results=None, **overrides):
    kwargs = dict(model_name="videomae-ferv39k", base_model="MCG-NJU/videomae-base", label_names=label_names("dfew"),
                  label_order="dfew", dataset_config="faces", protocol=PROTOCOL,
                  results=_results() if results is None else results)
    kwargs.update(overrides)
    return hub.render_model_card(**kwargs)


# -- model-index -----------------------------------------------------------------------------------------

def test_model_index_uses_the_hubs_metric_types_with_war_and_uar_as_names():
    from huggingface_hub import ModelCard

    [entry] = ModelCard(_card()).data.to_dict()["model-index"]
    [result] = entry["results"]
    assert result["task"]["type"] == "video-classification"
    assert result["dataset"] == {"name": "FERV39k (faces)", "type": "ferv39k", "config": "faces", "split": "test"}
    metrics = {m["name"]: m for m in result["metrics"]}
    assert len(metrics) == len(result["metrics"]) == 2 + 2 * len(SCENARIOS)
    for suffix in ["", *(f" ({s})" for s in SCENARIOS)]:
        war, uar = metrics[f"WAR{suffix}"], metrics[f"UAR{suffix}"]
        assert war["type"] == "accuracy" and "args" not in war
        assert uar["type"] == "recall" and uar["args"] == {"average": "macro"}
    assert (metrics["WAR"]["value"], metrics["UAR"]["value"]) == (52.34, 43.21)
    assert (metrics["WAR (Daily Life)"]["value"], metrics["UAR (Anomaly Issues)"]["value"]) == (40.0, 33.0)
    assert ModelCard(_card()).data.to_dict()["metrics"] == ["accuracy", "recall"]


def test_per_scenario_rows_follow_the_scores_and_skip_unscored_scenarios():
    from huggingface_hub import ModelCard

    card = ModelCard(_card(results=_results(scenarios=SCENARIOS[:2])))
    names = [r.metric_name for r in card.data.eval_results]
    assert names == ["WAR", "UAR", f"WAR ({SCENARIOS[0]})", f"UAR ({SCENARIOS[0]})",
                     f"WAR ({SCENARIOS[1]})", f"UAR ({SCENARIOS[1]})"]
    assert f"| {SCENARIOS[1]} | 11 | 41.00 | 31.00 |" in card.text and SCENARIOS[3] not in card.text
    unscored = ModelCard(_card(results={"war": None, "uar": None, "per_scenario": {}}))
    assert unscored.data.eval_results is None and "model-index" not in unscored.content.split("\n---", 1)[0]


def test_card_parses_and_eval_results_round_trip(tmp_path):
    from huggingface_hub import ModelCard, metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    text = _card()
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    card = ModelCard.load(path)
    expected = modelcard._eval_results(_results(), "FERV39k (faces)", "faces", "test")
    assert card.data.eval_results == expected
    assert card.data.base_model == "MCG-NJU/videomae-base" and card.data.pipeline_tag == "video-classification"
    meta = metadata_load(path)
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "videomae-ferv39k" and results == expected
    again = ModelCard(str(card))  # written back out and read again: the same metadata
    assert again.data.to_dict() == card.data.to_dict() and again.text == card.text


def test_card_names_the_label_order_and_the_clip_protocol():
    text = _card()
    assert "## Labels (dfew order)" in text
    assert "\n".join(f"| {i} | {w} |" for i, w in enumerate(label_names("dfew"))) in text
    protocol_section = text.split("## Clip protocol", 1)[1].split("\n## ", 1)[0]
    for fact in ["4 frames per clip from the faces frames", "**segment** sampling", "Input size 32x32",
                 "mean [0.45, 0.45, 0.45]", "std [0.225, 0.225, 0.225]", "2x2 views per clip",
                 protocol.VIDEO_PROCESSOR_FILE, protocol.IMAGE_PROCESSOR_FILE]:
        assert fact in protocol_section, fact
    window = _card(protocol={**PROTOCOL, "sampling": "window", "window_stride": 2})
    assert "**window (frame step 2)** sampling" in window


# -- personal data ---------------------------------------------------------------------------------------

def test_both_cards_carry_the_one_personal_data_text(built_faces):
    from huggingface_hub import DatasetCard, ModelCard

    for card in (ModelCard(_card()), DatasetCard((built_faces / "README.md").read_text(encoding="utf-8"))):
        section = card.text.split("## Personal data\n\n", 1)[1]
        assert section.startswith(PERSONAL_DATA) and card.text.count(PERSONAL_DATA) == 1
    for fact in ["real, identifiable person", "films, TV series and shows", "non-commercial research only",
                 "**private**", "not a fact about what a person feels"]:
        assert fact in PERSONAL_DATA.replace("\n", " ").replace("  ", " "), fact


# -- processor configs -----------------------------------------------------------------------------------

def test_processor_configs_hold_the_protocol_used_in_training(tmp_path):
    written = protocol.write_processor_configs(tmp_path, PROTOCOL, "videomae")
    assert sorted(p.name for p in written) == sorted([protocol.VIDEO_PROCESSOR_FILE, protocol.IMAGE_PROCESSOR_FILE])
    video = json.loads((tmp_path / protocol.VIDEO_PROCESSOR_FILE).read_text())
    image = json.loads((tmp_path / protocol.IMAGE_PROCESSOR_FILE).read_text())
    for config in (video, image):
        assert config["num_frames"] == 4 and config["ferv39k"] == PROTOCOL
        assert config["size"] == {"shortest_edge": 32} and config["crop_size"] == {"height": 32, "width": 32}
        assert (config["image_mean"], config["image_std"]) == (PROTOCOL["mean"], PROTOCOL["std"])
        assert config["do_resize"] and config["do_center_crop"] and config["do_normalize"]
        assert config["do_rescale"] and config["rescale_factor"] == pytest.approx(1 / 255)
    assert video["video_processor_type"] == "VideoMAEVideoProcessor" and video["do_sample_frames"] is True
    assert image["image_processor_type"] == "VideoMAEImageProcessor"
    assert "video_processor_type" not in protocol.video_processor_config(PROTOCOL, "vivit")
    assert protocol.video_processor_config(PROTOCOL, "timesformer")["video_processor_type"] == \
        "TimesformerVideoProcessor"


@pytest.mark.parametrize("broken, message", [
    ({"num_frames": None}, "lacks num_frames"), ({"image_size": 0}, "image_size must be a positive int"),
    ({"mean": [0.5, 0.5]}, "mean needs 3 values"), ({"test_views": None}, "lacks test_views"),
])
def test_an_incomplete_protocol_is_refused_by_name(tmp_path, broken, message):
    with pytest.raises(ValueError, match=message):
        protocol.write_processor_configs(tmp_path, {**PROTOCOL, **broken}, "videomae")
    assert not list(tmp_path.iterdir())


def _installed_source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        pytest.skip(f"this transformers has no {module} (no video processors before 4.5x)")
    return Path(spec.origin).read_text(encoding="utf-8")


@pytest.mark.parametrize("model_type", sorted(protocol.VIDEO_PROCESSOR_CLASSES))
def test_video_processor_keys_are_the_ones_installed_transformers_reads(model_type):
    """Checked against transformers' source, without instantiating the class (it needs torchvision)."""
    import transformers.utils

    config = protocol.video_processor_config(PROTOCOL, model_type)
    assert getattr(transformers.utils, "VIDEO_PROCESSOR_NAME", None) in (None, protocol.VIDEO_PROCESSOR_FILE)
    source = _installed_source(f"transformers.models.{model_type}.video_processing_{model_type}")
    defined = re.findall(r"^class (\w+)\(BaseVideoProcessor\)", source, re.M)
    assert defined == [config["video_processor_type"]]
    from transformers.processing_utils import VideosKwargs

    read = set(VideosKwargs.__annotations__)  # what BaseVideoProcessor takes from the file into attributes
    assert {"num_frames", "do_sample_frames"} <= read
    assert set(config) - read == {"video_processor_type", "ferv39k"}
    auto = _installed_source("transformers.models.auto.video_processing_auto")
    assert 'get("video_processor_type"' in auto  # AutoVideoProcessor picks the class by that key


def _tiny_checkpoint(folder: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForVideoClassification

    torch.manual_seed(0)
    words = label_names("dfew")
    config = AutoConfig.for_model("videomae", hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, image_size=32, num_frames=4, patch_size=16, tubelet_size=2,
                                  id2label=dict(enumerate(words)), label2id={w: i for i, w in enumerate(words)})
    config.ferv39k = PROTOCOL
    AutoModelForVideoClassification.from_config(config).save_pretrained(folder)
    protocol.write_processor_configs(folder, PROTOCOL, config.model_type)
    return folder


def test_image_processor_config_loads_and_drives_the_video_pipeline(tmp_path):
    """Without torchvision the pipeline takes the image processor: it must load ours and use its statistics."""
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("with torchvision the pipeline takes the video processor, which decodes with torchcodec")
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline

    from ferv39k_hf.synthetic import encode_mp4

    folder = _tiny_checkpoint(tmp_path / "ckpt")
    processor = AutoImageProcessor.from_pretrained(folder)
    assert (list(processor.image_mean), list(processor.image_std)) == (PROTOCOL["mean"], PROTOCOL["std"])
    assert processor.crop_size["height"] == 32 and processor.num_frames == 4 and processor.ferv39k == PROTOCOL
    video = tmp_path / "clip.mp4"
    rng = __import__("numpy").random.default_rng(0)
    video.write_bytes(encode_mp4([Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype="uint8"))
                                  for _ in range(6)]))
    classify = pipeline("video-classification", model=str(folder))
    assert list(classify.image_processor.image_mean) == PROTOCOL["mean"]
    ranked = classify(str(video), top_k=7)
    assert sorted(r["label"] for r in ranked) == sorted(label_names("dfew"))
    assert sum(r["score"] for r in ranked) == pytest.approx(1, abs=1e-4)


def test_video_processor_gives_the_evaluation_transforms_pixels(tmp_path):
    """Where torchvision is installed: AutoVideoProcessor loads the file and, on a clip of exactly
    num_frames frames (where its sampler and the package's pick the same frames), gives the pixels
    the package's evaluation transform gives, within one grey level."""
    pytest.importorskip("torchvision")
    import io

    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoVideoProcessor

    from ferv39k_hf import VideoClipTransform

    folder = _tiny_checkpoint(tmp_path / "ckpt")
    processor = AutoVideoProcessor.from_pretrained(folder)
    assert type(processor).__name__ == "VideoMAEVideoProcessor"
    assert (processor.num_frames, processor.do_sample_frames) == (4, True)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(4)]
    pngs = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        pngs.append({"bytes": buffer.getvalue(), "path": None})
    ours = VideoClipTransform(num_frames=4, size=32, train=False, mean=PROTOCOL["mean"], std=PROTOCOL["std"])(
        {"frames": [pngs], "label": [0]})["pixel_values"]
    theirs = processor(np.stack(frames), return_tensors="pt")["pixel_values"]
    assert theirs.shape == ours.shape == (1, 4, 3, 32, 32)
    grey_level = 1 / (255 * min(PROTOCOL["std"]))
    assert torch.max(torch.abs(theirs - ours)).item() <= 1.01 * grey_level
