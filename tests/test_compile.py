"""torch.compile and sharded bf16 models: DeviceFinish compiles whole, follows the model's dtype, and the example
trains under --torch_compile without recompiling batch after batch.

The fast checks compile with dynamo's ``eager`` backend: the graph capture, its guards and so every recompile
and graph break are dynamo's, the same whatever backend then compiles the graphs; the inductor runs are
marked slow (each compile takes tens of seconds on two cores).
"""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
F = torch.nn.functional

from ferv39k_hf import DeviceFinish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_VIDEOMAE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     image_size=32, num_frames=4, patch_size=16, tubelet_size=2, num_labels=7)


def per_clip_finish(finish, frames, boxes, flips):
    """DeviceFinish as it was: one F.interpolate per clip (the reference the batched matrices must equal)."""
    scale = torch.tensor([1 / (255 * s) for s in finish.std]).view(3, 1, 1)
    bias = torch.tensor([-m / s for m, s in zip(finish.mean, finish.std)]).view(3, 1, 1)
    clips = []
    for row, ((x0, y0, x1, y1), flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
        clip = frames[row, :, y0:y1, x0:x1].permute(0, 3, 1, 2).float()
        if clip.shape[-2:] != (finish.size, finish.size):
            clip = F.interpolate(clip, size=(finish.size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        clips.append(torch.addcmul(bias, clip.flip(-1) if flip else clip, scale))
    return torch.stack(clips)


def random_batch(generator, clips=4, height=48, width=60):
    """An on_device batch: uint8 frames, boxes of every kind (whole frame, small, 1 pixel, at the edges), flips."""
    frames = torch.randint(0, 256, (clips, 4, height, width, 3), dtype=torch.uint8, generator=generator)
    boxes = []
    for _ in range(clips):
        w = int(torch.randint(1, width + 1, (1,), generator=generator))
        h = int(torch.randint(1, height + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        y0 = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        boxes.append([x0, y0, x0 + w, y0 + h])
    return frames, torch.tensor(boxes), torch.rand(clips, generator=generator) < 0.5


def tiny_model():
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    return VideoMAEForVideoClassification(VideoMAEConfig(**TINY_VIDEOMAE, problem_type="single_label_classification"))


@pytest.mark.parametrize("size", [32, 7, 90])
def test_batched_finish_equals_one_interpolate_per_clip(size):
    """Downscaled (to 7), upscaled (to 90), cropped to one pixel, whole, mirrored: the filter matrices give
    torch's antialiased bilinear resize of each crop."""
    generator = torch.Generator().manual_seed(size)
    frames, boxes, flips = random_batch(generator, clips=8)
    boxes[0] = torch.tensor([0, 0, 60, 48])  # the whole frame
    boxes[1] = torch.tensor([59, 47, 60, 48])  # the last pixel
    if size <= 40:
        boxes[2] = torch.tensor([3, 5, 3 + size, 5 + size])  # already the output size
    flips[0], flips[2] = True, False
    finish = DeviceFinish(size, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    got = finish(frames, boxes, flips)
    expected = per_clip_finish(finish, frames, boxes, flips)
    assert got.shape == (8, 4, 3, size, size) and got.dtype == torch.float32
    assert (got - expected).abs().max() < 1e-4
    if size <= 40:  # a crop of the output size is copied, not filtered: the same values exactly
        assert torch.equal(got[2], expected[2])
    assert finish(frames, boxes, flips, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_finish_compiles_to_one_graph_that_new_boxes_do_not_recompile():
    """No .tolist(), no loop over clips, no shape from a box: fullgraph compiles it, and batches of other
    boxes and flips reuse the graph (set_stance fails on any recompile)."""
    torch.compiler.reset()
    finish = DeviceFinish(32)
    compiled = torch.compile(finish, fullgraph=True, backend="eager")
    generator = torch.Generator().manual_seed(0)
    compiled(*random_batch(generator))
    try:
        with torch.compiler.set_stance("fail_on_recompile"):
            for _ in range(4):
                batch = random_batch(generator)
                torch.testing.assert_close(compiled(*batch), finish(*batch))
    finally:
        torch.compiler.reset()


def test_attached_finish_hands_a_bf16_model_bf16_clips():
    """A bf16 model (or DeepSpeed's bf16 engine, or FSDP's bf16 compute without autocast) needs bf16 inputs:
    the attached finish follows the parameters; forced to float32, the model fails as it did before."""
    model = tiny_model().to(torch.bfloat16)
    received = []
    model.videomae.embeddings.patch_embeddings.projection.register_forward_pre_hook(
        lambda module, args: received.append(args[0].dtype))
    frames, boxes, flips = random_batch(torch.Generator().manual_seed(1), clips=2)
    batch = dict(pixel_values=frames, crop_boxes=boxes, flips=flips, labels=torch.tensor([1, 2]))
    finish = DeviceFinish(32)
    handle = finish.attach(model)
    with torch.no_grad():
        logits = model(**batch).logits
        handle.remove()
        expected = model(pixel_values=finish(frames, boxes, flips, dtype=torch.bfloat16)).logits
        torch.testing.assert_close(logits, expected)
        assert received[0] == torch.bfloat16
        finish.attach(model, dtype=torch.float32)
        with pytest.raises(RuntimeError, match="(?i)type"):
            model(**batch)


def _example():
    """The example's ``main`` and arguments, loaded through runpy (it imports its pieces from ferv39k_hf.training)."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / "examples" / "run_video_classification.py")))


def _tiny_checkpoint(folder):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    try:
        from transformers import VideoMAEImageProcessorPil as Processor  # transformers 5
    except ImportError:  # transformers 4
        from transformers import VideoMAEImageProcessor as Processor

    torch.manual_seed(0)  # like the Hub's checkpoints, no problem_type: the example must set it
    VideoMAEForVideoClassification(VideoMAEConfig(**TINY_VIDEOMAE)).save_pretrained(folder)
    Processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def train_compiled(built_faces, out, on_device, backend, monkeypatch):
    """Two epochs of batches 4, 4, 2 under --torch_compile: the first batch compiles, the smaller last batch
    may compile once more (torch then marks the batch size dynamic); any other compile fails the run."""
    import ferv39k_hf.training as training

    class FailOnRecompile(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            allowed = state.global_step in (0, 2)  # the first full and the first partial batch
            torch.compiler.set_stance("default" if allowed else "fail_on_recompile")

        def on_train_end(self, args, state, control, **kwargs):
            torch.compiler.set_stance("default")

    class Trainer(training.ClipViewTrainer):
        def __init__(self, *args, callbacks=(), **kwargs):
            super().__init__(*args, callbacks=[*callbacks, FailOnRecompile()], **kwargs)

    monkeypatch.setattr(training, "ClipViewTrainer", Trainer)  # before the example imports it
    example = _example()
    torch.compiler.reset()
    try:
        example.main(["--model_name_or_path", str(_tiny_checkpoint(out / "tiny")), "--dataset_dir", str(built_faces),
                      "--output_dir", str(out / "run"), "--report_to", "none", "--save_strategy", "no", "--use_cpu",
                      "--disable_tqdm", "true", "--seed", "0", "--do_train", "--max_train_samples", "10",
                      "--per_device_train_batch_size", "4", "--num_train_epochs", "2", "--torch_compile", "true",
                      "--torch_compile_backend", backend, "--finish_on_device", on_device])
    finally:
        torch.compiler.set_stance("default")
        torch.compiler.reset()
    state = json.loads((out / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["log_history"][-1]["train_loss"] > 0


def test_torch_compile_trains_without_recompiling_batch_after_batch(built_faces, tmp_path, monkeypatch):
    train_compiled(built_faces, tmp_path, "true", "eager", monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("on_device, backend", [("false", "eager"), ("true", "inductor"), ("false", "inductor")])
def test_torch_compile_trains_without_recompiling_batch_after_batch_slow(built_faces, tmp_path, monkeypatch,
                                                                        on_device, backend):
    train_compiled(built_faces, tmp_path, on_device, backend, monkeypatch)


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_fsdp_on_two_cpu_processes_computes_in_bf16(tmp_path):
    """FSDP1 and FSDP2 (gloo, bf16 compute, no autocast): DeviceFinish's clips arrive in bf16 and train; the
    float32 clips of the CPU path are cast by FSDP itself and give the same losses; float32 finished clips
    fail, which is what following the model's dtype prevents."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "fsdp_worker.py"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        for version in ("fsdp1", "fsdp2"):
            auto, cpu_path, float32 = (report[f"{version}/{mode}"] for mode in ("auto", "cpu_path", "float32"))
            assert auto["received"] == cpu_path["received"] == ["torch.bfloat16"] * 2, report
            assert len(auto["losses"]) == 2 and auto["losses"] == cpu_path["losses"], report
            assert "error" not in auto and float32["received"] == ["torch.float32"], report
            assert "BFloat16" in float32["error"], report


@pytest.mark.slow
def test_example_warns_that_fsdp_on_cpu_processes_is_ddp(built_faces, tmp_path):
    """accelerate enables FSDP only on accelerators: under torchrun on CPUs, --fsdp runs as DDP, and says so."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "examples" / "run_video_classification.py"), "--model_name_or_path",
               str(_tiny_checkpoint(tmp_path / "tiny")), "--dataset_dir", str(built_faces), "--output_dir",
               str(tmp_path / "run"), "--report_to", "none", "--save_strategy", "no", "--use_cpu", "--disable_tqdm",
               "true", "--do_train", "--max_steps", "2", "--per_device_train_batch_size", "2", "--ddp_backend",
               "gloo", "--fsdp", "full_shard", "--bf16", "--finish_on_device", "true"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--fsdp was given, but accelerate runs this cpu job as MULTI_CPU" in done.stdout + done.stderr
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["global_step"] == 2


@pytest.mark.parametrize("on_device", ["false", "true"])
def test_a_bf16_checkpoint_trains_and_scores_on_both_paths(built_faces, tmp_path, on_device):
    """transformers 5 loads a checkpoint saved in bf16 as bf16: the CPU path's float32 clips are cast to it,
    DeviceFinish finishes in it (before, the CPU path failed with a float/BFloat16 mismatch)."""
    from transformers import AutoModelForVideoClassification

    checkpoint = _tiny_checkpoint(tmp_path / "tiny")
    model = AutoModelForVideoClassification.from_pretrained(checkpoint).to(torch.bfloat16)
    model.save_pretrained(checkpoint)
    if AutoModelForVideoClassification.from_pretrained(checkpoint).dtype != torch.bfloat16:
        pytest.skip("this transformers loads checkpoints in float32 (transformers 4): nothing to cast")
    out = tmp_path / "run"
    metrics = _example().main([
        "--model_name_or_path", str(checkpoint), "--dataset_dir", str(built_faces), "--output_dir", str(out),
        "--report_to", "none", "--save_strategy", "no", "--use_cpu", "--disable_tqdm", "true", "--do_train",
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--do_eval", "--max_eval_samples", "8",
        "--test_views", "2x1", "--finish_on_device", on_device])
    assert 0 <= metrics["eval_war"] <= 1
    assert json.loads((out / "all_results.json").read_text())["train_loss"] > 0
