"""Servers and ports for tests, on 127.0.0.1 only: a port nothing listens on, and moto's S3 API on one."""

import socket

import pytest


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (bound, then closed): a dead endpoint, or one to start on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_s3_server():
    """moto's S3 server started on a free port of 127.0.0.1: ``(server, port)``; the caller stops it.

    Skips the test where s3fs or moto's server is not installed."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, port
