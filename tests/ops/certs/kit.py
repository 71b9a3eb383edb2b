"""A TLS server of the tests' own, for hosts other than the edge and for what a check sends."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

OTHER_HOST = "other.ctafleet.test"


@dataclass
class TlsServer:
    """A TLS server on loopback that records what each client sends after the handshake."""

    cert_pem: bytes
    key_pem: bytes
    workdir: Path
    received: list[bytes] = field(default_factory=list)
    handshakes: int = 0

    def __post_init__(self) -> None:
        (self.workdir / "cert.pem").write_bytes(self.cert_pem)
        (self.workdir / "key.pem").write_bytes(self.key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.workdir / "cert.pem", self.workdir / "key.pem")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with (
                contextlib.suppress(OSError),
                self.context.wrap_socket(conn, server_side=True) as tls,
            ):
                self.handshakes += 1
                tls.settimeout(5)
                data = b""
                with contextlib.suppress(ssl.SSLError, OSError):
                    while chunk := tls.recv(4096):
                        data += chunk
                self.received.append(data)

    def close(self) -> None:
        # shutdown() wakes the accept() in progress (close() alone would leave it listening).
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)
