"""Shared fixtures: one synthetic archive and one built folder per test session.

The Hub is unreachable on these machines and tests must not touch the user's
cache, so both are pointed away before datasets is imported.
"""

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "HF_HOME" not in os.environ:
    # datasets caches a few GB of Arrow files per session under it: removed when the session ends
    _HF_HOME, _SESSION_PID = tempfile.mkdtemp(prefix="ferv39k-hf-home-"), os.getpid()
    os.environ["HF_HOME"] = _HF_HOME
    atexit.register(lambda: os.getpid() == _SESSION_PID and shutil.rmtree(_HF_HOME, ignore_errors=True))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory):
    """The default synthetic archive (faces, scenes, videos), unpacked."""
    from ferv39k_hf.synthetic import write_sample_archive

    root = tmp_path_factory.mktemp("archive") / "FERV39k"
    write_sample_archive(root, seed=0)
    return root


@pytest.fixture(scope="session")
def built_faces(tmp_path_factory, sample_archive):
    """`ferv39k-hf build` of the sample archive, faces config, default options."""
    from ferv39k_hf.dataset.export import build_dataset_folder

    out = tmp_path_factory.mktemp("built") / "ferv39k"
    build_dataset_folder(sample_archive, out, config="faces")
    return out
