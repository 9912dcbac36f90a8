"""examples/predict.py: predictions of a built folder's split, or of the whole face folder, that `score` takes.

A tiny random VideoMAE with FERV39k's 7 classes stands in for a trained
checkpoint: its predictions are poor, but every clip gets one, and `score`
must agree with the file to the last digit.
"""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from ferv39k_hf.cli import main as cli_main
from ferv39k_hf.metrics.predictions import read_split
from ferv39k_hf.taxonomy import CLASS_WORDS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PREDICT = Path(__file__).resolve().parents[1] / "examples" / "predict.py"
TINY = ("hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64,image_size=32,num_frames=4,"
        "patch_size=16,tubelet_size=2")


@pytest.fixture(scope="module")
def predict():
    spec = importlib.util.spec_from_file_location("predict_example", PREDICT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random tiny VideoMAE whose id2label names the 7 classes, with its image processor config."""
    from transformers import AutoConfig, AutoModelForVideoClassification

    try:
        from transformers import VideoMAEImageProcessorPil as Processor  # transformers 5
    except ImportError:  # transformers 4
        from transformers import VideoMAEImageProcessor as Processor

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-7")
    config = AutoConfig.for_model("videomae", num_labels=7, id2label=dict(enumerate(CLASS_WORDS)),
                                  label2id={w: i for i, w in enumerate(CLASS_WORDS)})
    config.update_from_string(TINY)
    AutoModelForVideoClassification.from_config(config).save_pretrained(folder)
    Processor(image_mean=[0.45] * 3, image_std=[0.225] * 3, size={"shortest_edge": 32},
              crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_predicts_a_built_split_without_the_archive_and_score_agrees(predict, checkpoint, built_faces, tmp_path,
                                                                     monkeypatch, capsys):
    import io

    from tqdm.auto import tqdm

    bars = []
    assert predict._progress(7, "x").total == 7  # a tqdm bar, shown when stderr is a terminal

    def recording(total, desc):  # the same bar, drawn into a buffer the test reads
        bars.append(tqdm(total=total, desc=desc, unit="clip", file=io.StringIO()))
        return bars[-1]

    monkeypatch.setattr(predict, "_progress", recording)
    out = tmp_path / "preds.csv"
    assert predict.main([str(checkpoint), "--dataset", str(built_faces), "--split", "test", "--output", str(out),
                         "--batch_size", "16", "--device", "cpu"]) == 0
    test = read_split(built_faces, "test")
    rows = _rows(out)
    assert [r["clip_id"] for r in rows] == test.clip_ids  # every clip once, in the split's order
    assert f"wrote {len(rows)} predictions of split test" in capsys.readouterr().out
    assert [(bar.total, bar.n) for bar in bars] == [(len(test.clip_ids), len(test.clip_ids))]
    assert f"{len(test.clip_ids)}/{len(test.clip_ids)}" in bars[0].fp.getvalue()
    for row in rows:
        probs = [float(row[f"p_{w}"]) for w in CLASS_WORDS]
        assert sum(probs) == pytest.approx(1, abs=1e-4) and row["prediction"] == CLASS_WORDS[probs.index(max(probs))]
    assert cli_main(["score", str(out), "--dataset", str(built_faces), "--json", "--resamples", "100"]) == 0
    report = json.loads(capsys.readouterr().out)
    right = sum(r["prediction"] == word for r, word in zip(rows, test.words))
    assert report["war"] == right / len(rows) and report["missing"] == [] and report["ignored"] == {}


def test_predictions_of_the_whole_face_folder_score_without_allow_partial(predict, checkpoint, sample_archive,
                                                                          built_faces, tmp_path, capsys):
    faces = sample_archive / "2_ClipsforFaceCrop"
    out = tmp_path / "all.csv"
    assert predict.main([str(checkpoint), "--batch", str(faces), "--output", str(out), "--batch_size", "32",
                         "--device", "cpu"]) == 0
    train, test = read_split(built_faces, "train"), read_split(built_faces, "test")
    assert len(_rows(out)) == len(train.clip_ids) + len(test.clip_ids)
    capsys.readouterr()
    assert cli_main(["score", str(out), "--dataset", str(built_faces), "--resamples", "100"]) == 0
    printed = capsys.readouterr().out
    assert f"ignored {len(train.clip_ids)} clip(s) of split train" in printed
    assert "PARTIAL" not in printed and f": {len(test.clip_ids)} clips" in printed


def test_a_split_the_folder_lacks_is_one_error_line(predict, checkpoint, built_faces, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert predict.main([str(checkpoint), "--dataset", str(built_faces), "--split", "validation",
                         "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no split 'validation'; the build has test, train" in err
    assert str(built_faces) in err and not out.exists()
    with pytest.raises(SystemExit):  # one source of clips at a time
        predict.parse_args([str(checkpoint), "--dataset", str(built_faces), "--batch", str(tmp_path)])
