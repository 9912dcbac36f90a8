"""Reused batch memory is written only once nothing can read the batch it held: every batch equals the same
run's batch without reuse, through workers (fork, spawn, pinning, the file_system strategy), in one process
(and through accelerate's prefetching loader), and when the main process passes batches on to another."""

import collections
import contextlib
import functools
import os
import time

import pytest
import torch
import torch.multiprocessing as torch_mp
from test_transform_datasets import small_dataset

from ferv39k_hf.clips.batchmem import pickles, pool, shared
from ferv39k_hf.clips.collate import collate_clips
from ferv39k_hf.clips.columns import undecoded_frames
from ferv39k_hf.clips.transforms import VideoClipTransform

reuse_possible = pool.release_follows_storage() and pickles.watching()
needs_reuse = pytest.mark.skipif(not reuse_possible, reason="this torch lacks what the reuse needs")
OFF = {"reuse_memory": False}


def clips(on_device=False, reuse_memory=True, rows=6):
    transform = VideoClipTransform(4, 24, train=True, seed=3, on_device=on_device, reuse_memory=reuse_memory)
    return undecoded_frames(small_dataset(rows=rows)).with_transform(transform)


def epochs(dataset, hold=False, collate=collate_clips, count=3, workers=2, keep=None, **loader):
    """Every batch of ``count`` epochs through persistent workers, cloned at once unless ``hold``
    (``keep`` picks what is held of each batch)."""
    shared.claims.clear()
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers, persistent_workers=workers > 0,
                                         collate_fn=collate, **loader)
    seen = []
    for _ in range(count):
        for batch in loader:
            if keep is not None:
                batch = keep(batch)
            seen.append(batch if hold else {key: value.clone() for key, value in batch.items()})
    return seen


@functools.lru_cache(maxsize=None)
def _without_reuse(on_device, workers):
    return tuple(epochs(clips(on_device, reuse_memory=False), workers=workers))


def without_reuse(on_device=False, workers=2):
    """The batches of a run with reuse off (fork; the workers' random streams do not depend on the start
    method)."""
    return list(_without_reuse(on_device, workers))


def assert_same(batches, expected):
    assert len(batches) == len(expected)
    for got, want in zip(batches, expected):
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key


def reused(counter):
    return counter and max(counter.values()) >= 2


@needs_reuse
@pytest.mark.parametrize("on_device", [False, True])
def test_batches_dropped_at_once_let_workers_reuse_their_memory(on_device, monkeypatch):
    expected = without_reuse(on_device)
    assert not shared.claims, "reuse_memory=False turns the reuse off"
    got = epochs(clips(on_device))
    assert_same(got, expected)
    assert reused(shared.claims), "some buffer carried more than one batch"
    monkeypatch.setenv("FERV39K_HF_REUSE_MEMORY", "0")
    assert_same(epochs(clips(on_device)), expected)
    assert not shared.claims, "the environment switch turns it off"


@needs_reuse
def test_batches_held_by_the_main_process_are_never_written_over(monkeypatch):
    expected = without_reuse()
    held = epochs(clips(), hold=True)  # nothing freed: workers take new memory
    assert_same(held, expected)
    assert max(shared.claims.values()) == 1
    monkeypatch.setattr(shared, "SLOTS", 2)
    few = epochs(clips(), hold=True)  # past its buffers, a worker allocates as torch does
    assert_same(few, expected)


@contextlib.contextmanager
def pinning_thread():
    """On a machine without an accelerator torch skips pinning: pretend to have one whose pinning copies,
    so that batches arrive through the DataLoader's pin-memory thread as they do on a GPU machine."""
    if torch.accelerator.is_available():
        yield
        return
    from torch.utils.data._utils import pin_memory as pinning

    def copy(data):
        return {key: value.clone() for key, value in data.items()} if isinstance(data, dict) else data

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.accelerator, "is_available", lambda: True)
        patch.setattr(torch.accelerator, "current_accelerator", lambda *args: torch.device("cpu"))
        patch.setattr(torch.accelerator, "current_device_index", lambda: 0)
        patch.setattr(torch.accelerator, "set_device_index", lambda index: None)
        patch.setattr(pinning, "pin_memory", lambda data, device=None: copy(data))
        yield


@needs_reuse
@pytest.mark.parametrize("hold", [False, True])
@pytest.mark.parametrize("setting", ["spawn", "pin_memory", "file_system"])
def test_every_way_of_running_workers_gives_the_batches_of_no_reuse(setting, hold):
    expected = without_reuse(workers=1 if setting == "spawn" else 2)
    if setting == "spawn":
        got = epochs(clips(), hold=hold, workers=1, multiprocessing_context="spawn")
    elif setting == "pin_memory":
        with pinning_thread():
            got = epochs(clips(), hold=hold, pin_memory=True)
    else:
        strategy = torch_mp.get_sharing_strategy()
        torch_mp.set_sharing_strategy("file_system")
        try:
            got = epochs(clips(), hold=hold)
        finally:
            torch_mp.set_sharing_strategy(strategy)
    assert_same(got, expected)
    if not hold:
        assert reused(shared.claims)


@pytest.mark.parametrize("collate", [
    None,  # torch's default_collate copies the rows: the buffer is never sent
    lambda rows: dict(collate_clips(rows)),  # a plain dict: sent, but not leased
    lambda rows: {**collate_clips(rows), "pixel_values": collate_clips(rows)["pixel_values"] + 0},  # a copy
])
def test_batches_that_leave_another_way_keep_their_memory(collate):
    expected = epochs(clips(reuse_memory=False), collate=collate)
    assert_same(epochs(clips(), collate=collate), expected)
    assert_same(epochs(clips(), collate=collate, hold=True), expected)


def _break(check, monkeypatch):
    """Make one of the run-time checks of torch fail, in this process and in workers forked from it."""
    if check == "release":
        monkeypatch.setattr(pool, "_checked", (os.getpid(), False))
    elif check == "reducer":  # torch's storage reducer, registered again by someone else
        from multiprocessing.reduction import ForkingPickler

        from torch.multiprocessing import reductions

        monkeypatch.setitem(ForkingPickler._extra_reducers, torch.UntypedStorage,
                            lambda storage: reductions.reduce_storage(storage))
    elif check == "use_count":
        monkeypatch.delattr(torch._C, "_storage_Use_Count")
    else:
        def moved(*args, **kwargs):
            raise RuntimeError("private API moved")

        monkeypatch.setattr(torch.storage.TypedStorage, "_new_shared", moved)


@needs_reuse
@pytest.mark.parametrize("check", ["release", "reducer", "use_count", "new_shared"])
def test_reuse_turns_itself_off_when_a_check_of_torch_fails(check, monkeypatch):
    expected = without_reuse()
    _break(check, monkeypatch)
    assert_same(epochs(clips()), expected)
    assert not shared.claims, "no buffer was reused"
    if check in ("release", "reducer"):
        assert_same(epochs(clips(), hold=True), expected)
    if check == "release":  # and in this process, every batch gets memory of its own: the pool serves none
        # (counted at the pool, not by distinct addresses: malloc may hand a freed batch's address to a new one)
        pooled = []
        take = pool.BatchPool._take
        monkeypatch.setattr(pool.BatchPool, "_take",
                            lambda self, nbytes: pooled.append(nbytes) or take(self, nbytes))
        assert_same(in_process()[0], expected_in_process := in_process(reuse_memory=False)[0])
        assert expected_in_process and not pooled, "a failed release check turns the in-process pool off"


class SendTwice:
    """A collate that sends each batch again with the next one: the second time outside its lease."""

    def __init__(self):
        self.last = None

    def __call__(self, rows):
        batch = collate_clips(rows)
        before, self.last = self.last, batch
        return {"now": batch, "before": before if before is not None else batch}


@needs_reuse
@pytest.mark.parametrize("slow_count", [False, True])
def test_a_buffer_a_worker_pickles_again_is_never_reused(slow_count, monkeypatch):
    def keep(batch):
        return {"before": batch["before"]["pixel_values"], "now": batch["now"]["pixel_values"].clone()}

    expected = epochs(clips(reuse_memory=False), hold=True, collate=SendTwice(), workers=1, keep=keep)
    if slow_count:
        # The worker's queue pickles in a feeder thread while the worker's own thread looks for an idle
        # buffer: a use count that takes 3 ms widens the window in which the second send of a buffer could
        # drop it and let go of its batch between take's look at the buffer and its count (the forked
        # worker inherits the patch)
        count = shared._use_count
        monkeypatch.setattr(shared, "_use_count", lambda storage: time.sleep(0.003) or count(storage))
    got = epochs(clips(), hold=True, collate=SendTwice(), workers=1, keep=keep)  # "before" held, "now" freed
    assert_same(got, expected)


def _consume(batches, results, delay):
    """Take every batch, wait, then read them all (as a consumer process that lags behind does)."""
    got = []
    while (batch := batches.get()) is not None:
        got.append(batch)
    time.sleep(delay)
    results.put([{key: value.numpy().copy() for key, value in batch.items()} for batch in got])  # by value


@needs_reuse
@pytest.mark.parametrize("on_device, workers", [(False, 2), (True, 2), (False, 0)])
def test_batches_passed_on_to_another_process_are_never_written_over(on_device, workers):
    expected = without_reuse(on_device, workers)
    context = torch_mp.get_context("fork")
    batches, results = context.Queue(), context.Queue()
    consumer = context.Process(target=_consume, args=(batches, results, 0.5))
    consumer.start()  # before any batch exists here
    # each batch dropped once queued; with workers=0 torch moves it to new shared memory as it is sent
    epochs(clips(on_device), keep=lambda batch: batches.put(batch) or {}, workers=workers)
    batches.put(None)
    got = [{key: torch.from_numpy(value) for key, value in batch.items()} for batch in results.get(timeout=60)]
    consumer.join(timeout=60)
    assert_same(got, expected)


def _read_later(batch, results):
    time.sleep(0.5)
    results.put(batch["pixel_values"].numpy().copy())  # by value


@needs_reuse
def test_a_process_forked_while_a_batch_is_held_reads_it_unchanged():
    expected = without_reuse()
    context = torch_mp.get_context("fork")
    results = context.Queue()
    loader = torch.utils.data.DataLoader(clips(), batch_size=2, num_workers=2, collate_fn=collate_clips,
                                         persistent_workers=True)
    iterator = iter(loader)
    first = next(iterator)
    reader = context.Process(target=_read_later, args=(first, results))
    reader.start()  # inherits the mapping of the worker's buffer
    del first
    for _ in range(3):
        for _ in iterator:
            pass
        iterator = iter(loader)
    assert torch.equal(torch.from_numpy(results.get(timeout=60)), expected[0]["pixel_values"])
    reader.join(timeout=60)


# --- one process (num_workers=0) ---------------------------------------------------------------------


def in_process(reuse_memory=True, window=1, prefetch=False):
    """3 epochs of batches in this process, ``window`` of them alive at a time: (each batch cloned as it
    came, each cloned as it was let go, how many distinct memories the pixel values came in)."""
    dataset = clips(reuse_memory=reuse_memory)
    if prefetch:  # what the Trainer iterates: fetches one batch ahead
        from accelerate.data_loader import DataLoaderShard

        loader = DataLoaderShard(dataset, batch_size=2, collate_fn=collate_clips)
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_clips)
    def clone(batch):
        return {key: value.clone() for key, value in batch.items()}

    alive, arrived, left, places = collections.deque(), [], {}, set()
    for _ in range(3):
        for batch in loader:
            places.add(batch["pixel_values"].untyped_storage().data_ptr())
            arrived.append(clone(batch))
            alive.append((len(arrived) - 1, batch))
            if len(alive) > window:
                position, old = alive.popleft()
                left[position] = clone(old)
    left.update((position, clone(old)) for position, old in alive)
    return arrived, [left[position] for position in range(len(arrived))], len(places)


@needs_reuse
@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("window", [1, 4, 100])
def test_in_process_batches_are_never_rewritten_while_alive(prefetch, window, monkeypatch):
    expected, _, _ = in_process(reuse_memory=False, prefetch=prefetch)
    pooled = []  # batches the pool served from its arrays (fresh memory may come back at a freed address too)
    take = pool.BatchPool._take
    monkeypatch.setattr(pool.BatchPool, "_take",
                        lambda self, nbytes: pooled.append(nbytes) or take(self, nbytes))
    arrived, left, places = in_process(window=window, prefetch=prefetch)
    assert_same(arrived, expected)
    assert_same(left, expected)  # unchanged while held
    assert pooled
    if window == 1:
        assert places < len(expected), "the memory of freed batches was reused"
    if window == 100:
        assert places == len(expected)
    pooled.clear()
    monkeypatch.setenv("FERV39K_HF_REUSE_MEMORY", "0")
    assert_same(in_process(prefetch=prefetch)[0], expected)
    assert not pooled, "the environment switch turns reuse off"


def test_outside_a_worker_nothing_is_leased():
    batch = collate_clips(clips().__getitems__([0, 1]))
    assert type(batch) is dict
    assert shared.batch_tensor((2, 3), torch.float32) is None
