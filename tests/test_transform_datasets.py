"""VideoClipTransform on datasets and loaders: undecoded frames, with_transform, collation, and the on-device finish."""

import datasets
import pytest
import torch
from PIL import Image
from test_transforms import clip_bytes, frames_batch, tiny_videomae  # noqa: F401  (helpers and fixtures of test_transforms)

import ferv39k_hf
from ferv39k_hf.clips import columns
from ferv39k_hf.clips.collate import collate_clips
from ferv39k_hf.clips.columns import undecoded_frames
from ferv39k_hf.clips.device import DeviceFinish
from ferv39k_hf.clips.geometry import IMAGENET_STD
from ferv39k_hf.clips.transforms import VideoClipTransform


def small_dataset(rows=4):
    clips = [clip_bytes(6 + r, size=48, seed=r) for r in range(rows)]
    features = datasets.Features({
        "clip_id": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["Angry", "Happy"]),
        "num_frames": datasets.Value("int32"),
        "frames": datasets.List(datasets.Image()) if hasattr(datasets, "List") else datasets.Sequence(datasets.Image()),
    })
    return datasets.Dataset.from_dict({
        "clip_id": [f"Crime/Angry/{r:04d}" for r in range(rows)],
        "label": [r % 2 for r in range(rows)],
        "num_frames": [len(c) for c in clips],
        "frames": [[{"bytes": b, "path": f"{r:02d}.jpg"} for b in c] for r, c in enumerate(clips)],
    }, features=features)


def test_undecoded_frames_on_dataset_dict_and_iterable():
    ds = small_dataset()
    assert isinstance(ds[0]["frames"][0], Image.Image)
    fast = undecoded_frames(ds)
    assert fast.features["frames"].feature.decode is False
    assert ds.features["frames"].feature.decode is True, "the original is left as it was"
    assert set(fast[0]["frames"][0]) == {"bytes", "path"}
    assert fast.data.schema == ds.data.schema
    both = undecoded_frames(datasets.DatasetDict(train=ds, test=ds))
    assert all(part.features["frames"].feature.decode is False for part in both.values())
    streamed = undecoded_frames(ds.to_iterable_dataset())
    assert set(next(iter(streamed))["frames"][0]) == {"bytes", "path"}
    no_frames = ds.remove_columns("frames")
    assert undecoded_frames(no_frames) is no_frames
    assert undecoded_frames(fast) is fast
    assert ferv39k_hf.undecoded_frames is undecoded_frames


def test_without_image_decoding_keeps_every_container_form():
    image = datasets.Image()
    assert columns._without_image_decoding([image]) == [datasets.Image(decode=False)]
    assert columns._without_image_decoding({"a": image})["a"].decode is False
    sequence = columns._without_image_decoding(datasets.Sequence(image))
    assert sequence.feature.decode is False and type(sequence) is type(datasets.Sequence(image))


def test_with_transform_on_a_dataset_decoded_or_not():
    ds = small_dataset()
    transform = VideoClipTransform(4, 32, train=False)  # 48 -> 32: no DCT scaling, so PIL input agrees exactly
    fast = undecoded_frames(ds).with_transform(transform)[0:4]
    slow = ds.with_transform(transform)[0:4]
    assert torch.equal(fast["pixel_values"], slow["pixel_values"])
    assert fast["labels"].tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("workers", [0, 2])
def test_collate_clips_gives_the_default_batches(workers):
    ds = undecoded_frames(small_dataset(rows=6)).with_transform(VideoClipTransform(4, 24, train=False))
    def batches(collate):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate)
        return list(loader)
    ours, default = batches(collate_clips), batches(None)
    assert [b["pixel_values"].shape[0] for b in ours] == [4, 2]
    for a, b in zip(ours, default):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_collate_clips_rejoins_without_copying_and_stacks_otherwise():
    ds = undecoded_frames(small_dataset(rows=4)).with_transform(
        VideoClipTransform(4, 24, train=False, temporal_views=2))
    examples = ds.__getitems__([0, 1, 2])
    batch = collate_clips(examples)
    assert batch["pixel_values"].shape == (6, 4, 3, 24, 24)
    assert batch["pixel_values"].data_ptr() == examples[0]["pixel_values"].data_ptr(), "no copy"
    assert batch["view_clip_index"].tolist() == [0, 0, 1, 1, 2, 2]
    loose = [{"pixel_values": torch.full((2, 3), float(i)), "labels": i} for i in range(3)]
    stacked = collate_clips(loose)
    assert stacked["pixel_values"][:, 0, 0].tolist() == [0.0, 1.0, 2.0] and stacked["labels"].tolist() == [0, 1, 2]
    assert len(examples) == 6, "datasets splits the batch into one example per view"
    partial = collate_clips(examples[2:])  # rows of a tensor, but not all of it: stacked
    assert torch.equal(partial["pixel_values"], batch["pixel_values"][2:])
    assert partial["pixel_values"].data_ptr() != batch["pixel_values"].data_ptr()


def test_the_built_sample_dataset_loads_through_the_transform(built_faces):
    ds = undecoded_frames(datasets.load_dataset(str(built_faces), split="train"))
    out = ds.with_transform(VideoClipTransform(16, 112, train=True, seed=0))[0:2]
    assert out["pixel_values"].shape == (2, 16, 3, 112, 112)
    assert out["labels"].tolist() == ds[0:2]["label"]


# --- on_device: decode on the CPU, finish on the accelerator ----------------------------------------

ONE_GREY_LEVEL = 1.0 / (255.0 * min(IMAGENET_STD)) + 1e-5


@pytest.mark.parametrize("train,size,views", [(True, 64, (1, 1)), (True, 40, (1, 1)), (True, 96, (1, 1)),
                                              (False, 64, (2, 2)), (False, 48, (1, 3)), (False, 32, (1, 1))])
def test_on_device_batches_finish_to_the_cpu_values(train, size, views):
    """Same draws, same geometry: the finished batch equals the CPU path's to within its uint8 rounding."""
    batch = frames_batch([clip_bytes(20, seed=1), clip_bytes(7, seed=2), clip_bytes(16, seed=3)], labels=[1, 2, 3])
    common = dict(train=train, seed=3, temporal_views=views[0], spatial_views=views[1], flip_prob=0.5)
    expected = VideoClipTransform(8, size, **common)(batch)
    transform = VideoClipTransform(8, size, on_device=True, **common)
    deferred = transform(batch)
    rows = 3 * views[0] * views[1]
    assert deferred["pixel_values"].dtype == torch.uint8 and deferred["pixel_values"].shape[:2] == (rows, 8)
    assert deferred["crop_boxes"].shape == (rows, 4) and deferred["flips"].shape == (rows,)
    assert torch.equal(deferred["labels"], expected["labels"])
    if train:
        assert deferred["flips"].any() and not deferred["flips"].all(), "seed 3 flips some clips, not all"
    finished = transform.device_finish()(deferred["pixel_values"], deferred["crop_boxes"], deferred["flips"])
    assert finished.shape == expected["pixel_values"].shape and finished.dtype == torch.float32
    assert (finished - expected["pixel_values"]).abs().max() <= ONE_GREY_LEVEL
    if size == 64 and not train:  # no resizing: exactly the CPU path's values
        assert torch.equal(finished, expected["pixel_values"].contiguous())


def test_on_device_decodes_at_a_reduced_size_when_every_crop_allows():
    transform = VideoClipTransform(4, 20, train=False, on_device=True)
    deferred = transform(frames_batch([clip_bytes(6), clip_bytes(9)]))
    assert deferred["pixel_values"].shape == (2, 4, 32, 32, 3), "64-pixel frames decoded at 1/2 for 20 pixels"
    assert deferred["crop_boxes"].tolist() == [[0, 0, 32, 32]] * 2


def test_device_finish_attached_to_a_model_gives_the_finished_logits():
    model = tiny_videomae()
    transform = VideoClipTransform(4, 32, train=True, seed=0, on_device=True)
    batch = transform(frames_batch([clip_bytes(9), clip_bytes(5)], labels=[2, 5]))
    finish = transform.device_finish()
    with torch.no_grad():
        expected = model(pixel_values=finish(batch["pixel_values"], batch["crop_boxes"], batch["flips"])).logits
        handle = finish.attach(model)
        outputs = model(**batch)
        handle.remove()
        assert model(pixel_values=torch.zeros(1, 4, 3, 32, 32)).logits.shape == (1, 7), "plain inputs pass"
    torch.testing.assert_close(outputs.logits, expected)
    assert outputs.loss is not None, "labels still reach the model"


def test_on_device_needs_one_frame_size_per_batch():
    transform = VideoClipTransform(4, 32, train=False, on_device=True)
    with pytest.raises(ValueError, match=r"Crime/Angry/0001 48x48"):
        transform(frames_batch([clip_bytes(6, size=64), clip_bytes(6, size=48)]))
    with pytest.raises(ValueError, match="uint8"):
        transform.device_finish()(torch.zeros(1, 4, 32, 32, 3), torch.zeros(1, 4, dtype=torch.int64),
                                  torch.zeros(1, dtype=torch.bool))


@pytest.mark.parametrize("workers", [0, 2])
def test_on_device_batches_through_a_dataloader(workers):
    ds = undecoded_frames(small_dataset(rows=6)).with_transform(VideoClipTransform(4, 24, train=True, seed=1,
                                                                                    on_device=True))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate_clips)
    batches = list(loader)
    assert [b["pixel_values"].shape[0] for b in batches] == [4, 2]
    for batch in batches:
        assert batch["pixel_values"].dtype == torch.uint8 and batch["crop_boxes"].shape[1] == 4
        finished = DeviceFinish(24)(batch["pixel_values"], batch["crop_boxes"], batch["flips"])
        assert finished.shape == (batch["pixel_values"].shape[0], 4, 3, 24, 24)
