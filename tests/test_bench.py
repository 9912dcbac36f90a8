"""bench/gpu_step.py runs end to end (on the CPU, tiny model): it is the check a GPU session will run."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_gpu_step_smoke_run_reports_rates_and_workers(tmp_path):
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("gpu_step", BENCH / "gpu_step.py")
    gpu_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_step)
    out = tmp_path / "gpu.json"
    assert gpu_step.main(["--device", "cpu", "--tiny", "--batch-sizes", "2", "--steps", "1", "--warmup", "1",
                          "--loader-clips", "8", "--feed-workers", "0", "2", "--feed-batch-size", "4",
                          "--feed-steps", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (step,) = report["steps"]
    assert step["batch_size"] == 2 and step["clips_per_s"] > 0 and step["device_finish_ms"] > 0
    assert step["device_vs_cpu_max_abs"] == 0, "on the CPU both sides run the same code"
    assert set(report["loader_clips_per_s"]) == {"cpu_path", "on_device"}
    for name, rate in report["loader_clips_per_s"].items():
        assert rate > 0
        assert report["workers_needed"][name] == pytest.approx(step["clips_per_s"] / rate)
    fed = [(run["workers"], run["on_device"], run["batch_size"]) for run in report["fed"]]
    assert fed == [(-1, False, 4), (0, False, 4), (2, False, 4), (-1, True, 4), (0, True, 4), (2, True, 4)]
    assert all(run["clips_per_s"] > 0 for run in report["fed"])
    wait = {(run["workers"], run["on_device"]): run["wait_ms_per_step"] for run in report["fed"]}
    for on_device in (False, True):  # without workers the batch is made inside next(): the loop waits for it
        assert wait[(0, on_device)] > wait[(-1, on_device)] >= 0
