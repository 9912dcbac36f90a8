"""The datasets<4 route: loading_script/ferv39k under datasets 3.6 gives the builder's rows.

It needs a Python with datasets==3.6.0 and this package installed; `.ci/run`
makes one and names it in FERV39K_DATASETS3_PYTHON.
"""

import hashlib
import json
import os
import subprocess
from pathlib import Path

import datasets
import pytest

SCRIPT_DIR = Path(__file__).resolve().parents[1] / "loading_script" / "ferv39k"
PYTHON3 = os.environ.get("FERV39K_DATASETS3_PYTHON")

# datasets >= 4 spells a variable-length list List, older releases Sequence
UNDECODED_FRAMES = getattr(datasets, "List", datasets.Sequence)(datasets.Image(decode=False))

_DUMP = r"""
import hashlib, json, sys
import datasets
assert datasets.__version__.startswith("3."), datasets.__version__
script, root, out = sys.argv[1:4]
ds = datasets.load_dataset(script, "faces", data_dir=root, trust_remote_code=True, cache_dir=out + ".cache")
ds = ds.cast_column("frames", datasets.Sequence(datasets.Image(decode=False)))
rows = {}
for split in ds:
    for row in ds[split]:
        digest = hashlib.sha256(b"".join(f["bytes"] for f in row["frames"])).hexdigest()
        rows[row["clip_id"]] = [split, row["scene"], row["scenario"], row["label"], row["num_frames"], digest]
json.dump({"version": datasets.__version__, "names": ds["train"].features["label"].names, "rows": rows}, open(out, "w"))
"""


def _fingerprints(ds):
    rows = {}
    for split in ds:
        part = ds[split].cast_column("frames", UNDECODED_FRAMES)
        for row in part:
            digest = hashlib.sha256(b"".join(f["bytes"] for f in row["frames"])).hexdigest()
            rows[row["clip_id"]] = [split, row["scene"], row["scenario"], row["label"], row["num_frames"], digest]
    return rows


def test_the_script_is_a_thin_shim():
    source = (SCRIPT_DIR / "ferv39k.py").read_text()
    assert "from ferv39k_hf.dataset.builder import" in source
    code_lines = [line for line in source.splitlines() if line.strip() and not line.strip().startswith(("#", '"'))]
    assert len(code_lines) < 10, "the script must delegate to the package builder, not reimplement it"


@pytest.mark.skipif(not PYTHON3, reason="set FERV39K_DATASETS3_PYTHON to a Python with datasets==3.6.0 (.ci/run does)")
def test_loading_script_under_datasets_3_matches_the_built_folder(built_faces, sample_archive, tmp_path):
    out = tmp_path / "rows.json"
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_DATASETS_TRUST_REMOTE_CODE="1")
    done = subprocess.run([PYTHON3, "-c", _DUMP, str(SCRIPT_DIR), str(sample_archive), str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["version"] == "3.6.0"
    assert got["names"] == ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
    expected = _fingerprints(datasets.load_dataset(str(built_faces)))
    assert got["rows"] == expected
