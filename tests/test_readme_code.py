"""Every ```python block of README.md and examples/README.md runs as written, beside the sample.

Each block runs alone, in a fresh interpreter, in a folder where the quick start's `demo` (the synthetic
archive) and `ferv39k` (its build) exist: a block that uses a name it does not define fails here.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "examples" / "README.md"]


def python_blocks(path: Path):
    """(line, code) of each ```python block of ``path``."""
    text = path.read_text(encoding="utf-8")
    return [(text[: match.start()].count("\n") + 2, match.group(1))
            for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)]


BLOCKS = [(path, line, code) for path in DOCUMENTS for line, code in python_blocks(path)]


def test_the_readmes_hold_python_blocks():
    assert len([b for b in BLOCKS if b[0].name == "README.md" and b[0].parent == REPO]) >= 2


@pytest.fixture(scope="module")
def beside_the_sample(tmp_path_factory, sample_archive, built_faces):
    """A working folder with `demo` and `ferv39k` as the quick start leaves them, and a cache of its own."""
    folder = tmp_path_factory.mktemp("reader")
    (folder / "demo").symlink_to(sample_archive, target_is_directory=True)
    (folder / "ferv39k").symlink_to(built_faces, target_is_directory=True)
    return folder


@pytest.mark.parametrize("path,line,code", BLOCKS, ids=[f"{p.relative_to(REPO)}:{n}" for p, n, _ in BLOCKS])
def test_python_block_runs_as_written(path, line, code, beside_the_sample):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HOME": str(beside_the_sample / f"hf-home-{path.parent.name}-{line}"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=beside_the_sample, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    where = f"{path.relative_to(REPO)} line {line}"
    assert done.returncode == 0, f"{where}: the block fails as written:\n{done.stderr[-3000:]}"
