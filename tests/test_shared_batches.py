"""DataLoader workers reuse a batch's shared memory only once the main process has let the batch go."""

import collections

import pytest
import torch

from ferv39k_hf import _shared_batches
from ferv39k_hf.transforms import VideoClipTransform, collate_clips, undecoded_frames
from test_transforms import small_dataset

reuse_possible = _shared_batches._release_follows_storage() and _shared_batches._use_count(
    torch.empty(1).untyped_storage()) is not None
needs_reuse = pytest.mark.skipif(not reuse_possible, reason="this torch lacks what the reuse needs")
SLOTS = _shared_batches.SLOTS  # the default, before any test sets it


def clips(on_device=False):
    transform = VideoClipTransform(4, 24, train=True, seed=3, on_device=on_device)
    return undecoded_frames(small_dataset(rows=6)).with_transform(transform)


def epochs(dataset, monkeypatch, slots, hold=False, collate=collate_clips, count=3):
    """Every batch of ``count`` epochs through 2 persistent workers, cloned at once unless ``hold``."""
    monkeypatch.setattr(_shared_batches, "SLOTS", slots)
    monkeypatch.setattr(_shared_batches, "claims", collections.Counter())
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, persistent_workers=True,
                                         collate_fn=collate)
    seen = []
    for _ in range(count):
        for batch in loader:
            assert type(batch) is dict, "the main process gets plain dicts"
            seen.append(batch if hold else {key: value.clone() for key, value in batch.items()})
    return seen


def assert_same(batches, expected):
    assert len(batches) == len(expected)
    for got, want in zip(batches, expected):
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key


@needs_reuse
@pytest.mark.parametrize("on_device", [False, True])
def test_batches_dropped_at_once_let_workers_reuse_their_memory(monkeypatch, on_device):
    expected = epochs(clips(on_device), monkeypatch, slots=0)
    assert not _shared_batches.claims, "SLOTS = 0 turns the reuse off"
    got = epochs(clips(on_device), monkeypatch, slots=SLOTS)
    assert_same(got, expected)
    assert max(_shared_batches.claims.values()) >= 2, "some buffer carried more than one batch"


@needs_reuse
def test_batches_held_by_the_main_process_are_never_written_over(monkeypatch):
    expected = epochs(clips(), monkeypatch, slots=0)
    held = epochs(clips(), monkeypatch, slots=SLOTS, hold=True)  # nothing freed: workers take new memory
    assert_same(held, expected)
    assert max(_shared_batches.claims.values()) == 1
    few = epochs(clips(), monkeypatch, slots=2, hold=True)  # past its buffers, a worker allocates as torch does
    assert_same(few, expected)


@pytest.mark.parametrize("collate", [
    None,  # torch's default_collate copies the rows: the buffer is never sent
    lambda rows: dict(collate_clips(rows)),  # a plain dict: sent, but not leased
    lambda rows: {**collate_clips(rows), "pixel_values": collate_clips(rows)["pixel_values"] + 0},  # a copy
])
def test_batches_that_leave_another_way_keep_their_memory(monkeypatch, collate):
    expected = epochs(clips(), monkeypatch, slots=0, collate=collate)
    assert_same(epochs(clips(), monkeypatch, slots=SLOTS, collate=collate), expected)
    assert_same(epochs(clips(), monkeypatch, slots=SLOTS, collate=collate, hold=True), expected)


def test_outside_a_worker_nothing_changes():
    batch = collate_clips(clips().__getitems__([0, 1]))
    assert type(batch) is dict
    assert _shared_batches.batch_tensor((2, 3), torch.float32) is None
