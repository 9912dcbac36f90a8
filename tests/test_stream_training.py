"""The streamed training data (ferv39k_hf.dataset.streaming, the example's --streaming true training loader):
every clip once per epoch over ranks and DataLoader workers, with its own label; a new order each epoch and the
same one again for the same seed; the same batches per epoch on every rank; a resumed run goes on with the data
the interrupted one would have read."""

import collections
import json
import logging

import pytest

from ferv39k_hf.dataset import streaming
from ferv39k_hf.training import streamloader

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def built_dfew(tmp_path_factory, sample_archive):
    """The sample archive built with the DFEW label order (labels 0..6 name other classes than alphabetical)."""
    from ferv39k_hf.dataset.export import build_dataset_folder

    out = tmp_path_factory.mktemp("built-dfew") / "ferv39k"
    build_dataset_folder(sample_archive, out, config="faces", label_order="dfew")
    return out


def _train_ids(built):
    return [row["clip_id"] for row in streaming.stream(built, "train")]


def _emotion(clip_id):
    return clip_id.split("/")[1]  # Scene/Emotion/NNNN


@pytest.mark.parametrize("order", ["alphabetical", "dfew"])
def test_an_epoch_yields_every_clip_once_with_its_own_label_over_ranks_and_workers(
        order, built_faces, built_dfew, request):
    built = built_faces if order == "alphabetical" else built_dfew
    assert streaming.read_card(built)["ferv39k_label_order"] == order
    names = streaming.stream(built, "train").features["label"].names
    ids = _train_ids(built)
    assert len(set(map(_emotion, ids))) == len(names) == 7
    # 8 shards: 2 ranks get 4 whole shards each (5 workers: more than a rank has), 3 ranks every 3rd row
    for world, workers in ((1, 0), (1, 2), (2, 0), (2, 5), (3, 2)):
        seen = collections.Counter()
        for rank in range(world):
            train = streaming.stream(built, "train", shuffle_buffer=16, seed=1, rank=rank, world_size=world)
            train.set_epoch(2)
            loader = streamloader.StreamLoader(train, batch_size=5, num_workers=workers, collate_fn=list)
            for batch in loader:
                for row in batch:
                    assert names[row["label"]] == _emotion(row["clip_id"]), (order, world, workers, row["clip_id"])
                    seen[row["clip_id"]] += 1
        assert sorted(seen) == sorted(ids), (world, workers, "clips lost")
        assert max(seen.values()) == 1, (world, workers, [c for c, n in seen.items() if n > 1][:5])


def test_the_collator_keeps_each_clips_label_through_the_shuffle(built_dfew):
    from ferv39k_hf import VideoClipTransform

    names = streaming.stream(built_dfew, "train").features["label"].names
    train = streaming.stream(built_dfew, "train", shuffle_buffer=32, seed=0)
    collate = streamloader.StreamCollator(VideoClipTransform(num_frames=2, size=16, train=True), keep=("clip_id",))
    rows = 0
    for batch in streamloader.StreamLoader(train, batch_size=16, num_workers=2, collate_fn=collate):
        assert [names[int(label)] for label in batch["labels"]] == [_emotion(c) for c in batch["clip_id"]]
        assert batch["pixel_values"].shape[0] == len(batch["clip_id"])
        rows += len(batch["clip_id"])
    assert rows == len(_train_ids(built_dfew))


def _order(loader):
    return [row["clip_id"] for batch in loader for row in batch]


def test_each_epoch_reshuffles_in_the_workers_and_a_seed_repeats_its_orders(built_faces):
    def loader(seed):
        train = streaming.stream(built_faces, "train", shuffle_buffer=16, seed=seed)
        return streamloader.StreamLoader(train, batch_size=4, num_workers=2, collate_fn=list)

    first, again, other = loader(0), loader(0), loader(1)
    orders = {}
    for epoch in (0, 1):
        for name, each in (("first", first), ("again", again), ("other", other)):
            each.set_epoch(epoch)  # what Trainer calls: it must reach the (new) workers of the epoch
            orders[name, epoch] = _order(each)
    ids = sorted(_train_ids(built_faces))
    assert all(sorted(order) == ids for order in orders.values())
    assert orders["first", 0] != orders["first", 1]
    assert orders["first", 0] == orders["again", 0] and orders["first", 1] == orders["again", 1]
    assert orders["other", 0] != orders["first", 0]


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_every_rank_runs_the_same_batches_per_epoch_and_resumes_mid_epoch(built_faces, caplog, monkeypatch):
    rows = len(_train_ids(built_faces))
    world, batch = 3, 4
    per_epoch = streamloader.steps_per_epoch(rows, world, batch)  # 110 // 4 = 27
    counts = []
    for rank in range(world):
        train = streaming.stream(built_faces, "train", shuffle_buffer=8, seed=0, rank=rank, world_size=world)
        # 5 workers over every 3rd row: a share can be 109 rows, and each worker ends on a partial batch
        loader = streamloader.StreamLoader(train, batch_size=batch, num_workers=5, batches_per_epoch=per_epoch,
                                        collate_fn=list)
        assert len(loader) == per_epoch
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            counts.append(len(list(loader)))
    assert counts == [per_epoch] * (2 * world)

    # a share smaller than the pass (as unequal shards make it under several processes): read again, with a
    # warning, never short; in one process the share is the whole split, so a short pass is missing data
    train = streaming.stream(built_faces, "train", shuffle_buffer=8, seed=0, max_rows=10)
    loader = streamloader.StreamLoader(train, batch_size=4, batches_per_epoch=5, collate_fn=list)
    with pytest.raises(streaming.StreamError, match="gave 3 batches, fewer than the 5 an epoch has"):
        list(loader)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with caplog.at_level(logging.WARNING, logger=streamloader.__name__):
        batches = list(loader)
    assert len(batches) == 5 and "gave 3 batches, fewer than the 5" in caplog.text
    monkeypatch.delenv("WORLD_SIZE")

    train = streaming.stream(built_faces, "train", shuffle_buffer=8, seed=0)
    loader = streamloader.StreamLoader(train, batch_size=batch, num_workers=2, batches_per_epoch=20, collate_fn=list)
    loader.set_epoch(1)
    whole = _order(loader)
    loader.resume_at(1, 7)
    assert _order(loader) == whole[7 * batch:]
    assert _order(loader) == whole  # the skip is for one pass only
    with pytest.raises(ValueError, match="a pass has 20 batches"):
        loader.resume_at(1, 20)


class _Rows:
    """Collator for a recording model: a clip's index in the split stands in for its frames."""

    def __init__(self, ids):
        self.index = {clip_id: i for i, clip_id in enumerate(ids)}

    def __call__(self, rows):
        return {"clip": torch.tensor([[float(self.index[r["clip_id"]])] for r in rows]),
                "labels": torch.tensor([r["label"] for r in rows])}


class _Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(1, 7)
        self.seen = []

    def forward(self, clip, labels):
        self.seen.append([int(c) for c in clip[:, 0].tolist()])
        logits = self.head(clip / 1000)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_a_resumed_streamed_run_reads_what_the_interrupted_run_would_have_read(built_faces, tmp_path, caplog):
    from transformers import TrainingArguments

    from ferv39k_hf.training import STREAM_SETTINGS, ClipViewTrainer

    ids = _train_ids(built_faces)
    batch, accumulation = 8, 2
    per_epoch = streamloader.steps_per_epoch(len(ids), 1, batch, accumulation)  # 331 // 16 = 20
    max_steps, stop_at = 2 * per_epoch + 5, per_epoch + 7  # the checkpoint lies inside the second epoch

    def run(resume=None, workers=2):
        torch.manual_seed(0)
        model = _Recorder()
        args = TrainingArguments(
            output_dir=str(tmp_path / "run"), per_device_train_batch_size=batch, max_steps=max_steps,
            gradient_accumulation_steps=accumulation, save_strategy="steps", save_steps=stop_at,
            report_to="none", use_cpu=True, disable_tqdm=True, seed=0, remove_unused_columns=False,
            dataloader_num_workers=workers, logging_strategy="no")
        train = streaming.stream(built_faces, "train", shuffle_buffer=16, seed=0)
        trainer = ClipViewTrainer(model=model, args=args, train_dataset=train,
                                             data_collator=_Rows(ids), stream_steps_per_epoch=per_epoch,
                                             stream_settings={"shuffle_buffer": 16})
        trainer.train(resume_from_checkpoint=resume)
        assert trainer.state.global_step == max_steps
        assert args.ignore_data_skip is False  # the stream skipped, and the caller's arguments are as given
        return model.seen

    whole = run()
    assert len(whole) == max_steps * accumulation
    epoch0 = [c for b in whole[:per_epoch * accumulation] for c in b]
    epoch1 = [c for b in whole[per_epoch * accumulation:2 * per_epoch * accumulation] for c in b]
    assert len(set(epoch0)) == len(epoch0) == per_epoch * accumulation * batch  # no clip twice in an epoch
    assert epoch0 != epoch1 and len(set(epoch1)) == len(epoch1)  # the second epoch has its own order
    checkpoint = tmp_path / "run" / f"checkpoint-{stop_at}"
    recorded = json.loads((checkpoint / STREAM_SETTINGS).read_text())
    assert recorded["dataloader_num_workers"] == 2 and recorded["steps_per_epoch"] == per_epoch
    assert recorded["shuffle_buffer"] == 16
    with caplog.at_level(logging.WARNING, logger="ferv39k_hf.training.trainer"):
        resumed = run(str(checkpoint))
    assert resumed == whole[stop_at * accumulation:]
    assert "stream settings other than" not in caplog.text
    # other settings give other batches: the resume goes on, saying which setting differs
    with caplog.at_level(logging.WARNING, logger="ferv39k_hf.training.trainer"):
        elsewhere = run(str(checkpoint), workers=0)
    assert "stream settings other than the checkpoint's" in caplog.text
    assert "dataloader_num_workers 2 -> 0" in caplog.text
    assert elsewhere != whole[stop_at * accumulation:]
