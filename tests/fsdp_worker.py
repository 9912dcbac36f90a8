"""One rank of tests/test_compile.py's FSDP check: a tiny VideoMAE sharded over CPU processes (gloo) in bf16.

Run under ``torchrun --nproc_per_node 2 tests/fsdp_worker.py OUT_DIR``. For FSDP1 and FSDP2 (``fully_shard``),
each with bf16 compute and no autocast, a fresh model trains two steps three ways: ``auto``, on ``on_device``
batches finished by an attached :class:`ferv39k_hf.DeviceFinish` that picks its dtype at each call;
``float32``, the same with the dtype forced to float32 (what the finish gave before it followed the model);
``cpu_path``, on the float32 clips the CPU path hands over. Each rank writes, per case, the dtype the patch
embedding received, the losses, or the error, to ``OUT_DIR/rank-N.json``.
"""

import sys

import torch
import torch.distributed as dist
from rank_report import write_and_leave
from transformers import VideoMAEConfig, VideoMAEForVideoClassification

from ferv39k_hf import DeviceFinish


def shard(model, version):
    if version == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision

        return FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=True,
                                        mixed_precision=MixedPrecision(param_dtype=torch.bfloat16,
                                                                       reduce_dtype=torch.float32))
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.videomae.encoder.layer:
        fully_shard(layer, mp_policy=policy)
    return fully_shard(model, mp_policy=policy)


def run_case(version, mode, rank):
    torch.manual_seed(0)
    config = VideoMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            image_size=32, num_frames=4, patch_size=16, tubelet_size=2, num_labels=7,
                            problem_type="single_label_classification")
    model = VideoMAEForVideoClassification(config)
    finish = DeviceFinish(32)
    if mode != "cpu_path":
        finish.attach(model, dtype=None if mode == "auto" else torch.float32)
    received = []
    model.videomae.embeddings.patch_embeddings.projection.register_forward_pre_hook(
        lambda module, args: received.append(str(args[0].dtype)))
    model = shard(model, version)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(rank)
    result = {"received": received, "losses": []}
    try:
        for _ in range(2):
            frames = torch.randint(0, 256, (2, 4, 48, 48, 3), dtype=torch.uint8, generator=generator)
            boxes, flips, labels = torch.tensor([[0, 0, 48, 48], [5, 9, 35, 39]]), torch.tensor([True, False]), \
                torch.tensor([1, 4])
            if mode == "cpu_path":  # float32 clips as the CPU path hands them over; FSDP casts its root's inputs
                loss = model(pixel_values=finish(frames, boxes, flips), labels=labels).loss
            else:
                loss = model(pixel_values=frames, crop_boxes=boxes, flips=flips, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            result["losses"].append(float(loss.detach()))
    except RuntimeError as error:  # the dtype mismatch the float32 case is there to show
        result["error"] = str(error).splitlines()[0]
    return result


def main(out_dir):
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    report = {f"{version}/{mode}": run_case(version, mode, rank)
              for version in ("fsdp1", "fsdp2") for mode in ("auto", "float32", "cpu_path")}
    write_and_leave(out_dir, report)


if __name__ == "__main__":
    main(sys.argv[1])
