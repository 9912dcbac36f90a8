"""A TCP proxy on 127.0.0.1 for tests: passes bytes to a server, or resets, stalls or cuts connections on demand."""

import socket
import struct
import threading
import time


def _reset(sock):
    """Close with an RST (SO_LINGER 0), as a dying server or a middlebox does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream``.

    ``mode``: ``"pass"``; ``"reset"`` (every connection, new or open, is reset); ``"stall"``
    (connections are accepted, nothing more is forwarded or answered). :meth:`outage` resets
    for a while, then passes again; ``cut_after`` bytes sent to clients start an outage of
    ``cut_outage`` seconds once, mid-transfer. Every thread stops within 0.2 s of :meth:`close`.
    """

    def __init__(self, upstream: int):
        self.upstream, self.mode, self.outage_until = upstream, "pass", 0.0
        self.cut_after, self.cut_outage, self.sent, self.connections = None, 0.0, 0, 0
        self._lock, self._stop, self._open = threading.Lock(), threading.Event(), set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _state(self):
        if time.monotonic() < self.outage_until:
            return "reset"
        return self.mode

    def set_mode(self, mode):
        self.mode = mode
        if mode == "reset":
            self._reset_open()

    def outage(self, seconds):
        """Reset every open connection and refuse new ones (with an RST) for ``seconds``."""
        self.outage_until = time.monotonic() + seconds
        self._reset_open()

    def _reset_open(self):
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _reset(sock)

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            if self._state() == "reset":
                _reset(client)
                continue
            with self._lock:
                self._open.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        upstream = None
        try:
            if self._state() == "pass":
                upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                with self._lock:
                    self._open.add(upstream)
                threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
                self._pump(upstream, client, True)
            else:
                while not self._stop.is_set() and self._state() == "stall":
                    time.sleep(0.05)  # held open, never answered
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._open.discard(sock)
                    sock.close()

    def _pump(self, source, target, to_client):
        source.settimeout(0.1)
        while not self._stop.is_set():
            state = self._state()
            if state == "stall":
                time.sleep(0.05)
                continue
            if state == "reset":
                return
            try:
                data = source.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                target.sendall(data)
            except OSError:
                return
            if to_client:
                self.sent += len(data)
                if self.cut_after is not None and self.sent >= self.cut_after:
                    self.cut_after = None
                    self.outage(self.cut_outage)
                    return

    def close(self):
        self._stop.set()
        self._reset_open()
        self.listener.close()
