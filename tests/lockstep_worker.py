"""One rank of tests/test_lockstep.py: ranks holding different numbers of batches run an FSDP model in lockstep.

Run under ``torchrun --nproc_per_node 2 tests/lockstep_worker.py OUT_DIR [--no-lockstep]``. For each case of
``CASES`` (batches per rank) and each FSDP version (FSDP1 ``FullyShardedDataParallel``, FSDP2 ``fully_shard``),
a tiny model sharded over the CPU processes (gloo) runs forward on every step of
:func:`ferv39k_hf.training.streamloader.lockstep` over this rank's batches. Each rank writes, per case, the steps
it took, how many were fillers, and the id and output of every item of its real batches to
``OUT_DIR/rank-N.json``. With ``--no-lockstep`` it iterates its batches as they are (the hang the helper
prevents; the process group's timeout is short, so that run fails rather than blocks).
"""

import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from rank_report import write_and_leave

from ferv39k_hf.training.streamloader import lockstep

CASES = {"3-vs-1": (3, 1), "2-vs-0": (2, 0), "0-vs-2": (0, 2), "2-vs-2": (2, 2)}
BATCH, FEATURES = 2, 6


def make_model() -> torch.nn.Module:
    """The model every rank shards and the test's unsharded reference: same seed, same weights."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                               torch.nn.ReLU(), torch.nn.Linear(16, 3))


def batches_of(case: str, rank: int):
    """Rank ``rank``'s batches in ``case``: item ids ``case/rank/batch/row`` and inputs drawn from them."""
    out = []
    for b in range(CASES[case][rank]):
        ids = [f"{case}/{rank}/{b}/{row}" for row in range(BATCH)]
        generator = torch.Generator().manual_seed(hash_of(ids[0]))
        out.append({"ids": ids, "x": torch.randn(BATCH, FEATURES, generator=generator)})
    return out


def hash_of(text: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(text))


def shard(model, version):
    if version == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=True)
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    return fully_shard(model)


def filler():
    return {"ids": [], "x": torch.zeros(1, FEATURES)}


def run_case(case, version, rank, use_lockstep):
    model = shard(make_model(), version).eval()
    steps = fillers = 0
    items = {}
    pairs = lockstep(batches_of(case, rank), filler) if use_lockstep else ((b, True) for b in batches_of(case, rank))
    with torch.no_grad():
        for batch, real in pairs:
            outputs = model(batch["x"])  # FSDP all-gathers the parameters: every rank must take this step
            steps += 1
            if not real:
                fillers += 1
                continue
            for item, output in zip(batch["ids"], outputs.tolist()):
                items[item] = output
    return {"steps": steps, "fillers": fillers, "items": items}


def main(out_dir, use_lockstep):
    dist.init_process_group("gloo", timeout=timedelta(seconds=20))
    rank = dist.get_rank()
    report = {f"{case}/{version}": run_case(case, version, rank, use_lockstep)
              for case in CASES for version in ("fsdp1", "fsdp2")}
    write_and_leave(out_dir, report)


if __name__ == "__main__":
    main(sys.argv[1], "--no-lockstep" not in sys.argv[2:])
