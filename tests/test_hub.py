"""`ferv39k-hf push` (private dataset repos only) and checkpoint model cards, against a local Hub stand-in."""

import shutil
from pathlib import Path

import pytest
import yaml
from hubstub import HubStub

from ferv39k_hf.archive.outdirs import MARKER, folder_problem
from ferv39k_hf.cli import main as cli_main
from ferv39k_hf.dataset import hub
from ferv39k_hf.taxonomy import PERSONAL_DATA, SCENARIOS, label_names


@pytest.fixture
def stub(monkeypatch):
    import huggingface_hub.constants

    with HubStub(lifetime_s=120) as server:
        # conftest switches the Hub off for the session; only this loopback stand-in is reachable here.
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        # older huggingface_hub (0.25) parses the URLs it gets back against HF_ENDPOINT as read at import
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


@pytest.fixture
def small_build(built_faces, tmp_path):
    """The built sample with each shard cut to its first rows: the same card and file names, quick to upload."""
    import pyarrow.parquet as pq

    folder = tmp_path / "small"
    shutil.copytree(built_faces, folder, ignore=shutil.ignore_patterns("*.parquet"))
    for shard in built_faces.rglob("*.parquet"):
        first_rows = pq.ParquetFile(shard).read_row_group(0).slice(0, 2)
        pq.write_table(first_rows, folder / shard.relative_to(built_faces))
    return folder


def _local_files(folder: Path):
    """What a push uploads: every file but the build marker, which is about the local folder only."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != MARKER}


def _push(folder, repo_id, token, *extra):
    return cli_main(["push", str(folder), "--repo-id", repo_id, "--token", token, *extra])


def _with_card_field(built: Path, dest: Path, key: str, value) -> Path:
    shutil.copytree(built, dest)
    text = (dest / "README.md").read_text(encoding="utf-8")
    front, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    if value is None:
        meta.pop(key)
    else:
        meta[key] = value
    (dest / "README.md").write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n{body}", encoding="utf-8")
    return dest


def test_push_creates_a_private_repo_and_uploads_every_file(stub, small_build, capsys):
    assert _push(small_build, "team/ferv39k-faces", stub.token) == 0
    out = capsys.readouterr()
    repo = stub.repo("team/ferv39k-faces")
    assert repo.private is True
    assert repo.files == _local_files(small_build)
    assert any(name.endswith(".parquet") for name in repo.files)
    assert PERSONAL_DATA in repo.files["README.md"].decode()  # the pushed card says what the faces mean
    assert (small_build / MARKER).is_file() and MARKER not in repo.files
    assert folder_problem(small_build) is None, "a pushed folder stays one that build --overwrite may replace"
    assert "created private dataset repository team/ferv39k-faces" in out.out
    assert stub.token not in out.out + out.err
    assert all(r.authorized for r in stub.writes())


@pytest.mark.slow
def test_push_of_the_whole_built_sample(stub, built_faces):
    # About 150 MB base64-encoded through Python on both ends: ~15 s.
    assert _push(built_faces, "team/full", stub.token) == 0
    assert stub.repo("team/full").files == _local_files(built_faces)


def test_push_refuses_a_public_repo_and_writes_nothing(stub, built_faces, capsys):
    stub.add_repo("team/open", private=False)
    assert _push(built_faces, "team/open", stub.token) == 1
    err = capsys.readouterr().err
    assert "public" in err and "terms" in err and "PRIVATE" in err
    assert stub.token not in err
    assert stub.writes() == []
    assert stub.repo("team/open").files == {}


def test_push_to_an_existing_private_repo_and_branch(stub, small_build, capsys):
    stub.add_repo("team/internal", private=True, files={"old.txt": b"x"})
    assert _push(small_build, "team/internal", stub.token, "--revision", "v1") == 0
    repo = stub.repo("team/internal")
    assert repo.files == {"old.txt": b"x"}  # main untouched
    assert repo.branches["v1"] == {"old.txt": b"x", **_local_files(small_build)}
    assert "created" not in capsys.readouterr().out
    assert not any(r.path == "/api/repos/create" for r in stub.requests)


def test_push_refuses_a_reference_build_before_contacting_the_hub(stub, small_build, tmp_path, capsys):
    folder = _with_card_field(small_build, tmp_path / "ref", "ferv39k_frames", "reference")
    assert _push(folder, "team/ref", stub.token) == 1
    assert "--frames reference" in capsys.readouterr().err
    assert stub.requests == []


@pytest.mark.parametrize("case", ["no_marker", "plain_folder", "missing_shard", "a_file"])
def test_push_refuses_what_build_did_not_make(stub, small_build, tmp_path, capsys, case):
    if case == "no_marker":
        target = _with_card_field(small_build, tmp_path / "x", "ferv39k_frames", None)
    elif case == "plain_folder":
        target = tmp_path / "x"
        target.mkdir()
        (target / "frames.parquet").write_bytes(b"PAR1")
    elif case == "missing_shard":
        target = tmp_path / "x"
        shutil.copytree(small_build, target)
        next(target.rglob("*.parquet")).unlink()
    else:
        target = tmp_path / "x.txt"
        target.write_text("no")
    assert _push(target, "team/x", stub.token) == 1
    err = capsys.readouterr().err
    assert str(target) in err
    assert stub.requests == []


def test_push_without_a_token_says_how_to_log_in(stub, built_faces, capsys):
    assert cli_main(["push", str(built_faces), "--repo-id", "team/x"]) == 1
    assert "hf auth login" in capsys.readouterr().err
    assert stub.requests == []


def test_push_with_a_wrong_token_reports_without_echoing_it(stub, built_faces, capsys):
    assert _push(built_faces, "team/x", "hf_wrong_secret") == 1
    err = capsys.readouterr().err
    assert "team/x" in err and "hf_wrong_secret" not in err
    assert all(not r.authorized for r in stub.writes())
    assert ("dataset", "team/x") not in stub.repos


def test_push_reads_the_logged_in_token_from_the_environment(stub, small_build, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", stub.token)
    assert cli_main(["push", str(small_build), "--repo-id", "team/env"]) == 0
    assert stub.repo("team/env").private
    assert stub.repo("team/env").files == _local_files(small_build)


def _results():
    per = {s: {"war": 0.5 + i / 100, "uar": 0.4 + i / 100, "support": 10 + i} for i, s in enumerate(SCENARIOS)}
    return {"war": 0.5234, "uar": 0.4321, "support": {"Angry": 40, "Happy": 6}, "per_scenario": per}


def _card():
    return hub.render_model_card(
        model_name="videomae-ferv39k", base_model="MCG-NJU/videomae-base", label_names=label_names("dfew"),
        label_order="dfew", dataset_config="faces",
        protocol={"num_frames": 16, "image_size": 224, "sampling": "segment", "test_views": "2x2",
                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        results=_results(), training={"learning_rate": 5e-5, "epochs": 3},
    )


def test_model_card_states_base_model_labels_protocol_and_scores():
    from huggingface_hub import ModelCard

    card = ModelCard(_card())
    data = card.data.to_dict()
    assert data["base_model"] == "MCG-NJU/videomae-base"
    assert data["pipeline_tag"] == "video-classification"
    [entry] = data["model-index"]
    [result] = entry["results"]
    assert result["dataset"]["type"] == "ferv39k" and result["dataset"]["split"] == "test"
    metrics = {m["name"]: m["value"] for m in result["metrics"]}
    assert metrics["WAR"] == 52.34 and metrics["UAR"] == 43.21
    assert metrics["WAR (Anomaly Issues)"] == 53.0 and metrics["UAR (Daily Life)"] == 40.0
    text = card.text
    for i, word in enumerate(label_names("dfew")):
        assert f"| {i} | {word} |" in text
    assert "| all test clips | 46 | 52.34 | 43.21 |" in text
    assert "| Weak-Interactive Shows | 11 | 51.00 | 41.00 |" in text
    assert "segment" in text and "2x2" in text and "16 frames" in text
    assert "is **not** included in or distributed with" in " ".join(text.split())  # the data is not shipped


def test_checkpoint_push_uploads_the_model_but_never_data(stub, tmp_path):
    folder = tmp_path / "ckpt"
    (folder / "checkpoint-10").mkdir(parents=True)
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"old")
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "all_results.json").write_text("{}")
    (folder / "README.md").write_text(_card())
    (folder / "train-00000.parquet").write_bytes(b"PAR1")
    (folder / "frame.jpg").write_bytes(b"\xff\xd8")
    result = hub.push_checkpoint(folder, "videomae-ferv39k", token=stub.token)
    assert result.repo_id == "tester/videomae-ferv39k" and result.created
    files = stub.repo("tester/videomae-ferv39k", repo_type="model").files
    assert set(files) == {"config.json", "model.safetensors", "all_results.json", "README.md"}
    assert files["README.md"].decode() == _card()
