"""Free space: a build or a load that cannot fit is refused before writing, and a disk that fills midway
ends in one line with the figures, the earlier build untouched and nothing half-written left behind."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ferv39k_hf.archive.layout import find_layout
from ferv39k_hf.archive.splits import plan_splits
from ferv39k_hf.cli import main
from ferv39k_hf.dataset import diskspace, export
from ferv39k_hf.dataset.builder import load
from ferv39k_hf.errors import BuildError
from ferv39k_hf.synthetic import write_sample_archive


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("space") / "FERV39k"
    write_sample_archive(root, scale=0.002, parts=["faces"], scenes=["Action", "Crime", "War"])
    return root


@pytest.fixture
def small_disk(tmp_path):
    """A file system of a given size (a tmpfs), mounted for the test; a skip where mounting is not allowed."""
    mounted = []

    def make(megabytes: int) -> Path:
        place = tmp_path / f"disk-{len(mounted)}"
        place.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(place)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()}")
        mounted.append(place)
        return place

    yield make
    for place in mounted:  # lazily: a failed test may still hold files open there
        subprocess.run(["umount", "--lazy", str(place)], check=True)


def _tree(folder: Path):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _fill(disk: Path, leave: int = 256 << 10):
    """Take all but ``leave`` bytes of ``disk``'s free space, as another program writing there would."""
    with open(disk / "someone-elses-file", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, shutil.disk_usage(disk).free - leave)


def test_the_estimate_is_close_to_the_bytes_a_build_copies(small):
    layout = find_layout(small)
    records = plan_splits(layout).records.values()
    exact = sum(ref.size for split in records for r in split for ref in layout.part("faces").clip_files(r.clip_id))
    estimate = diskspace.payload_bytes(layout.part("faces"), records)
    assert abs(estimate - exact) <= 0.5 * diskspace.MARGIN_FRACTION * exact, (estimate, exact)


def test_a_build_that_cannot_fit_is_refused_before_writing(small, small_disk, capsys):
    disk = small_disk(32)
    code = main(["build", str(small), "--out", str(disk / "built")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("ferv39k-hf build: error: building faces needs about ") and " is free there" in line
    needed = diskspace.needed_bytes(diskspace.payload_bytes(find_layout(small).part("faces"),
                                                            plan_splits(find_layout(small)).records.values()))
    assert f"{needed / 1e6:.1f} MB" in line
    assert list(disk.iterdir()) == [], "nothing is written, not even the temporary folder"


def test_a_disk_that_fills_midway_leaves_the_earlier_build_and_nothing_else(small, small_disk, monkeypatch, capsys):
    disk = small_disk(160)
    assert main(["build", str(small), "--out", str(disk / "built")]) == 0
    before = _tree(disk)
    write = export.ShardWriter.write

    def filled_first(self, task, progress=None):
        if not (disk / "someone-elses-file").exists():
            _fill(disk)
        return write(self, task, progress)

    monkeypatch.setattr(export.ShardWriter, "write", filled_first)
    code = main(["build", str(small), "--out", str(disk / "built"), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("ferv39k-hf build: error: the disk filled during the build, which was removed")
    assert "needs about" in line and "is free there" in line
    (disk / "someone-elses-file").unlink()
    assert _tree(disk) == before, "the earlier build is as it was and no partial folder is left"


def test_a_load_that_cannot_fit_in_datasets_cache_is_refused(small, small_disk):
    disk = small_disk(32)
    with pytest.raises(BuildError, match=r"loading faces into datasets' cache needs about .* is free there"):
        load(str(small), cache_dir=str(disk / "cache"))
    assert not any(p.is_file() and p.stat().st_size > 1 << 20 for p in disk.rglob("*")), "no frames were written"


def test_a_load_whose_disk_fills_midway_names_the_figures(small, small_disk, monkeypatch):
    disk = small_disk(160)
    from ferv39k_hf.dataset.builder import Ferv39k

    generate = Ferv39k._generate_examples

    def filled_first(self, *args, **kwargs):
        _fill(disk)
        yield from generate(self, *args, **kwargs)

    monkeypatch.setattr(Ferv39k, "_generate_examples", filled_first)
    with pytest.raises(BuildError, match=r"the disk filled while datasets wrote its cache: .* needs about"):
        load(str(small), cache_dir=str(disk / "cache"))
    left = [p for p in (disk / "cache").rglob("*.arrow")]
    assert not left, f"datasets left half-written files: {left}"
