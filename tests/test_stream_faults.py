"""Streaming from a damaged folder or a failing S3 server (moto's, on 127.0.0.1, behind a proxy that resets, stalls
or cuts connections): short and cut shards are refused naming the shard, transient failures are retried with a
log line each and within a stated bound, every other storage failure ends in one line naming the URL."""

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferv39k_hf.dataset import streaming
from ferv39k_hf.dataset.storage import (
    PATIENCE_ENV,
    StoragePatience,
    StreamError,
    filesystem,
    is_transient,
    storage_options_for,
)

pq = pytest.importorskip("pyarrow.parquet")
torch = pytest.importorskip("torch")

from localnet import free_port, start_s3_server  # noqa: E402
from test_training import EXAMPLES, run_script  # noqa: E402,F401

FAST = StoragePatience(connect_timeout=0.4, read_timeout=0.4, attempts=3, backoff=0.05, max_backoff=0.05)
BUCKET = "faults"


def _linked_copy(src: Path, dst: Path) -> Path:
    """A copy of a built folder whose files are hard links: a damaged file is unlinked and written anew."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _shards(folder, split):
    return streaming.split_files(streaming.read_card(folder), str(folder))[split]


def _keep_rows(shard: str, rows: int) -> int:
    """Rewrite ``shard`` as a valid Parquet file of its first ``rows`` rows; returns the rows it held."""
    table = pq.read_table(shard)
    os.unlink(shard)
    pq.write_table(table.slice(0, rows), shard)
    return table.num_rows


def _cut(shard: str) -> None:
    data = Path(shard).read_bytes()
    os.unlink(shard)
    Path(shard).write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def s3(built_faces):
    """moto's S3 server on 127.0.0.1 holding the card and test shards of the built sample at s3://faults/ferv39k."""
    server, port = start_s3_server()
    import s3fs

    endpoint = f"http://127.0.0.1:{port}"
    client = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client.mkdir(BUCKET)
    client.put(str(built_faces / "README.md"), f"{BUCKET}/ferv39k/README.md")
    for shard in _shards(built_faces, "test"):
        client.put(shard, f"{BUCKET}/ferv39k/{Path(shard).relative_to(built_faces).as_posix()}")
    try:
        yield port, client
    finally:
        server.stop()


@pytest.fixture
def aws(monkeypatch):
    """Point the AWS variables at an endpoint: ``aws(url)``."""
    def point(endpoint, key="testing"):
        for name, value in {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": key, "AWS_DEFAULT_REGION": "us-east-1",
                            "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", PATIENCE_ENV):
            monkeypatch.delenv(name, raising=False)
    return point


@pytest.fixture
def proxy(s3):
    from faultproxy import FaultProxy

    running = FaultProxy(s3[0])
    try:
        yield running
    finally:
        running.close()


def _retries(caplog, url_part):
    lines = [record.getMessage() for record in caplog.records]
    return [line for line in lines if line.startswith("retrying") and url_part in line]


def test_patience_is_stated_parsed_and_reaches_botocore_and_s3fs(monkeypatch):
    patience = StoragePatience.parse("read_timeout=60, attempts=3")
    assert patience == StoragePatience(read_timeout=60.0, attempts=3)
    assert patience.worst_case_s() == 3 * (10 + 60) + 1 + 2
    assert StoragePatience().worst_case_s() == 8 * (10 + 30) + (1 + 2 + 4 + 8 + 16 + 16 + 16)
    for bad, match in (("attempts=0", "at least 1"), ("tries=3", "NAME=VALUE"), ("read_timeout=soon", "number")):
        with pytest.raises(ValueError, match=match):
            StoragePatience.parse(bad)
    monkeypatch.setenv(PATIENCE_ENV, "attempts=two")
    with pytest.raises(StreamError, match=PATIENCE_ENV):
        StoragePatience.from_env()
    options = storage_options_for("s3://b/x", {"config_kwargs": {"read_timeout": 99}}, patience)
    assert options["config_kwargs"] == {"connect_timeout": 10.0, "read_timeout": 99,
                                        "retries": {"total_max_attempts": 1, "mode": "standard"}}
    pytest.importorskip("s3fs")
    fs, path = filesystem("s3://b/x", options)
    assert path == "b/x" and fs.retries == 1  # s3fs's own retries off: ours are all there are


def test_transient_failures_are_told_from_lasting_ones():
    botocore = pytest.importorskip("botocore.exceptions")

    def client_error(status, code):
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return botocore.ClientError(response, "GetObject")

    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert is_transient(botocore.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(botocore.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(client_error(503, "SlowDown")) and is_transient(client_error(500, "InternalError"))
    wrapped = OSError("We encountered an internal error")
    wrapped.__cause__ = client_error(500, "InternalError")  # as s3fs translates it
    assert is_transient(wrapped)
    assert not is_transient(client_error(404, "NoSuchKey")) and not is_transient(client_error(403, "AccessDenied"))
    assert not is_transient(PermissionError("Forbidden")) and not is_transient(ValueError("bad"))


def test_a_short_shard_stops_a_local_stream_and_the_run_before_any_result(built_faces, tmp_path, run_script):
    folder = _linked_copy(built_faces, tmp_path / "short")
    shard = _shards(folder, "train")[3]
    held = _keep_rows(shard, 5)
    total = streaming.card_row_counts(streaming.read_card(folder))["train"]
    with pytest.raises(StreamError) as info:
        streaming.stream(folder, "train")
    assert str(info.value).startswith(f"{shard} holds 5 rows where the card gives it {held}: the train split's 8 "
                                      f"shards hold {total - held + 5} rows, {folder / 'README.md'} says {total}")
    out = tmp_path / "out"
    with pytest.raises(StreamError, match=Path(shard).name):
        run_script.main(["--model_name_or_path", "unused", "--dataset_dir", str(folder), "--streaming", "true",
                         "--do_train", "--do_eval", "--output_dir", str(out), "--report_to", "none"])
    assert not out.exists() or not any(out.iterdir()), "nothing is written before the check"


def test_a_shard_cut_short_after_the_check_stops_the_epoch_in_one_line_from_a_worker(built_faces, tmp_path):
    from ferv39k_hf.training.streamloader import StreamLoader

    folder = _linked_copy(built_faces, tmp_path / "changed")
    test = streaming.stream(folder, "test")  # footers checked: all as the card says
    shard = _shards(folder, "test")[2]
    held = _keep_rows(shard, 3)  # then a shard changes under the running stream
    with pytest.raises(StreamError) as info:
        list(StreamLoader(test, batch_size=4, num_workers=1, collate_fn=list))
    assert str(info.value) == f"{shard} holds 3 rows where the card gives it {held}"  # one line, not the worker's


def test_a_cut_shard_is_named_locally_and_in_s3(built_faces, tmp_path, s3, aws):
    folder = _linked_copy(built_faces, tmp_path / "cut")
    shard = _shards(folder, "test")[5]
    _cut(shard)
    with pytest.raises(StreamError, match=f"^{shard}: not a readable Parquet file, the shard is cut or damaged"):
        streaming.stream(folder, "test")
    port, client = s3
    aws(f"http://127.0.0.1:{port}")
    name = Path(shard).relative_to(folder).as_posix()
    client.copy(f"{BUCKET}/ferv39k", f"{BUCKET}/cut", recursive=True)
    client.put(shard, f"{BUCKET}/cut/{name}")
    with pytest.raises(StreamError, match=f"^s3://{BUCKET}/cut/{name}: not a readable Parquet file"):
        streaming.stream(f"s3://{BUCKET}/cut", "test", patience=FAST)


def test_a_short_shard_in_s3_is_named_with_both_counts(built_faces, tmp_path, s3, aws):
    port, client = s3
    aws(f"http://127.0.0.1:{port}")
    folder = _linked_copy(built_faces, tmp_path / "short-s3")
    shard = _shards(folder, "test")[1]
    held = _keep_rows(shard, 5)
    name = Path(shard).relative_to(folder).as_posix()
    client.copy(f"{BUCKET}/ferv39k", f"{BUCKET}/short", recursive=True)
    client.put(shard, f"{BUCKET}/short/{name}")
    with pytest.raises(StreamError, match=f"^s3://{BUCKET}/short/{name} holds 5 rows where the card gives it {held}"):
        streaming.stream(f"s3://{BUCKET}/short", "test", patience=FAST)


def test_a_stalled_server_is_given_up_on_within_the_stated_bound_with_a_line_per_retry(s3, proxy, aws, caplog,
                                                                                     monkeypatch):
    aws(proxy.url)
    monkeypatch.setenv(PATIENCE_ENV, "connect_timeout=0.4,read_timeout=0.4,attempts=3,backoff=0.05,max_backoff=0.05")
    proxy.set_mode("stall")  # accepts the connection, never answers (a SIGSTOPped server)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(StreamError) as info:
        streaming.read_card(f"s3://{BUCKET}/ferv39k")
    elapsed = time.monotonic() - started
    assert elapsed < FAST.worst_case_s() + 2, elapsed
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        f"s3://{BUCKET}/ferv39k/README.md: gave up reading the card at {proxy.url} after 3 tries over")
    assert "timeout" in message.lower()
    retries = _retries(caplog, "README.md")
    assert [line.split(": reading the card failed: ")[0] for line in retries] == [
        f"retrying s3://{BUCKET}/ferv39k/README.md in 0.05 s (attempt {n} of 3)" for n in (2, 3)]
    assert all("timeout" in line.lower() for line in retries)


def test_a_stall_in_the_middle_of_a_stream_names_the_shard(s3, proxy, aws, caplog):
    aws(proxy.url)
    test = streaming.stream(f"s3://{BUCKET}/ferv39k", "test", patience=FAST)  # card and footers read
    proxy.set_mode("stall")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(StreamError) as info:
        list(test)
    assert time.monotonic() - started < FAST.worst_case_s() + 2
    assert str(info.value).startswith(f"s3://{BUCKET}/ferv39k/data/faces/test-00000-of-00008")
    assert "gave up" in str(info.value) and len(_retries(caplog, "/data/faces/test-00000-of-00008")) == 2


def test_a_brief_outage_mid_transfer_is_survived_without_a_row_lost_or_repeated(built_faces, s3, proxy, aws, caplog):
    aws(proxy.url)
    patience = StoragePatience(connect_timeout=2, read_timeout=2, attempts=8, backoff=0.1, max_backoff=0.2)
    test = streaming.stream(f"s3://{BUCKET}/ferv39k", "test", patience=patience)
    proxy.cut_after, proxy.cut_outage = proxy.sent + 8_000_000, 0.5  # inside the second shard's transfer
    with caplog.at_level(logging.WARNING):
        rows = list(test)
    assert proxy.cut_after is None, "the outage happened"
    assert _retries(caplog, f"s3://{BUCKET}/ferv39k/data/faces/test-"), "each retry is logged"
    assert rows == list(streaming.stream(built_faces, "test"))  # every row once, in order, frames byte for byte


def test_a_dead_endpoint_ends_in_one_line_naming_the_url(aws, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    aws(dead)
    monkeypatch.setenv(PATIENCE_ENV, "attempts=2,backoff=0.05")
    pytest.importorskip("s3fs")
    with pytest.raises(StreamError) as info:
        streaming.read_card(f"s3://{BUCKET}/ferv39k")
    assert str(info.value).startswith(f"s3://{BUCKET}/ferv39k/README.md: gave up reading the card at {dead} after 2 "
                                      "tries over")
    assert "Could not connect to the endpoint URL" in str(info.value)


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_the_example_ends_a_storage_failure_in_one_line(aws, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    aws(dead)
    env = {**os.environ, PATIENCE_ENV: "attempts=1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(EXAMPLES / "run_video_classification.py"), "--model_name_or_path",
                           "unused", "--dataset_dir", f"s3://{BUCKET}/ferv39k", "--streaming", "true", "--do_eval",
                           "--output_dir", str(tmp_path / "out"), "--report_to", "none"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"run_video_classification.py: error: s3://{BUCKET}/ferv39k/README.md: gave up reading")
    assert "Traceback" not in done.stderr


def test_wrong_credentials_end_in_one_line_naming_the_url(s3, aws):
    import requests

    port, _ = s3
    endpoint = f"http://127.0.0.1:{port}"
    aws(endpoint, key="not-a-key")
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10)  # moto checks credentials from now on
    try:
        started = time.monotonic()
        with pytest.raises(StreamError) as info:
            streaming.read_card(f"s3://{BUCKET}/ferv39k", patience=FAST)
        assert time.monotonic() - started < 5, "refused credentials are not retried"
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
    assert str(info.value).startswith(f"s3://{BUCKET}/ferv39k/README.md: access denied while reading the card")
    assert "check the credentials (AWS_ACCESS_KEY_ID" in str(info.value)


def test_a_missing_bucket_or_prefix_is_named_as_such(s3, aws):
    port, _ = s3
    aws(f"http://127.0.0.1:{port}")
    with pytest.raises(StreamError, match=f"^s3://no-such-bucket/ferv39k/README.md: there is no bucket "
                                          f"'no-such-bucket' at http://127.0.0.1:{port}"):
        streaming.read_card("s3://no-such-bucket/ferv39k", patience=FAST)
    with pytest.raises(StreamError, match=f"^s3://{BUCKET}/nothing/README.md is missing: s3://{BUCKET}/nothing is not "
                                          "a folder built by 'ferv39k-hf build'"):
        streaming.read_card(f"s3://{BUCKET}/nothing", patience=FAST)
