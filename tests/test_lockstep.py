"""ferv39k_hf.training.streamloader.lockstep: ranks with different numbers of batches (even none) run a sharded
model's forward in step, under torchrun with 2 CPU processes (gloo, FSDP1 and FSDP2; tests/lockstep_worker.py),
and a single process gets its batches as they are."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ferv39k_hf.dataset import streaming  # noqa: E402
from ferv39k_hf.training import streamloader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "lockstep_worker.py"


def _worker():
    spec = importlib.util.spec_from_file_location("lockstep_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torchrun(out: Path, *extra: str, timeout: int = 120):
    """Run the worker on 2 processes; a hang is killed (the whole process group) after ``timeout`` seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(out), *extra]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the ranks did not finish within {timeout} s (a hang):\n{output[-3000:]}")
    return process.returncode, output


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_uneven_ranks_run_fsdp_in_lockstep_and_score_each_item_once(tmp_path):
    """3 vs 1, 2 vs 0, 0 vs 2 and 2 vs 2 batches: both ranks take max(batches) steps, fillers are marked, every
    real item is seen once, on its own rank, with the unsharded model's output."""
    code, output = _torchrun(tmp_path)
    assert code == 0, output[-3000:]
    worker = _worker()
    reference = worker.make_model().eval()
    reports = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    for case, counts in worker.CASES.items():
        expected = {}
        for rank in (0, 1):
            for batch in worker.batches_of(case, rank):
                with torch.no_grad():
                    for item, row in zip(batch["ids"], reference(batch["x"])):
                        expected[item] = row
        assert len(expected) == sum(counts) * worker.BATCH
        for version in ("fsdp1", "fsdp2"):
            parts = [report[f"{case}/{version}"] for report in reports]
            for rank, part in enumerate(parts):
                assert part["steps"] == max(counts), (case, version, rank, part["steps"])
                assert part["fillers"] == max(counts) - counts[rank], (case, version, rank)
                assert all(item.split("/")[1] == str(rank) for item in part["items"]), (case, version, rank)
            seen = [item for part in parts for item in part["items"]]
            assert sorted(seen) == sorted(expected), (case, version)  # each once, none missing
            for part in parts:
                for item, row in part["items"].items():
                    torch.testing.assert_close(torch.tensor(row), expected[item], rtol=1e-5, atol=1e-6,
                                               msg=f"{case}/{version}: item {item}")


@pytest.mark.slow  # fails by a collective mismatch in ~10 s, or by the worker's 20 s process-group timeout
def test_without_lockstep_uneven_ranks_break_fsdp(tmp_path):
    """The same worker iterating its batches as they are: the rank that runs out leaves while the other still
    all-gathers, so the run fails (crash or timeout) and never writes both reports; this is what lockstep prevents."""
    code, output = _torchrun(tmp_path, "--no-lockstep", timeout=180)
    assert code != 0, output[-3000:]
    assert not all((tmp_path / f"rank-{rank}.json").exists() for rank in (0, 1))


def test_without_distributed_batches_come_as_they_are(monkeypatch):
    """No process group: every batch once, in order, all real, no filler made and no collective called."""
    import torch.distributed as dist

    assert not (dist.is_available() and dist.is_initialized())

    def refuse(*args, **kwargs):
        raise AssertionError("lockstep called a collective without a process group")

    monkeypatch.setattr(dist, "all_reduce", refuse)
    made = []
    batches = [{"x": torch.full((2,), float(i))} for i in range(3)]
    pairs = list(streamloader.lockstep(iter(batches), lambda: made.append(1)))
    assert [real for _, real in pairs] == [True] * 3 and made == []
    assert all(batch is original for (batch, _), original in zip(pairs, batches))
    assert list(streamloader.lockstep([], lambda: made.append(1))) == [] and made == []


def test_a_one_process_group_exchanges_nothing(monkeypatch):
    """World size 1 is the single-process path too: batches as they are, no all_reduce."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        monkeypatch.setattr(dist, "all_reduce", lambda *a, **k: pytest.fail("all_reduce with one process"))
        batches = ["a", "b"]
        assert list(streamloader.lockstep(batches, lambda: "filler")) == [("a", True), ("b", True)]
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("on_device", [False, True])
def test_the_streamed_evaluations_filler_is_shaped_like_a_streamed_eval_batch(built_faces, on_device):
    """ferv39k_hf.training.filler_batch (for a rank whose share has no batch): the keys, dtypes and per-clip
    shapes of the eval transform's streamed batches, one view; on_device fillers finish to (1, T, 3, S, S)."""
    import ferv39k_hf
    from ferv39k_hf.training import filler_batch

    transform = ferv39k_hf.VideoClipTransform(train=False, num_frames=4, size=32, temporal_views=1,
                                              spatial_views=1, on_device=on_device)
    collate = streamloader.StreamCollator(transform, keep=("clip_id", "scene"))
    rows = list(streaming.stream(built_faces, "test", max_rows=2))
    real, filler = collate(rows), filler_batch(transform)
    assert set(filler) == set(real)
    for key, value in real.items():
        if isinstance(value, list):
            assert isinstance(filler[key], list) and len(filler[key]) == 1, key
            continue
        assert filler[key].dtype == value.dtype and filler[key].shape[0] == 1, key
        shape = filler[key].shape[1:]
        if key == "pixel_values" and on_device:  # the frames' own size, S x S for the filler
            assert shape == (4, 32, 32, 3), shape
        else:
            assert shape == value.shape[1:], key
    if on_device:
        finished = transform.device_finish()(filler["pixel_values"], filler["crop_boxes"], filler["flips"])
        assert finished.shape == (1, 4, 3, 32, 32)
