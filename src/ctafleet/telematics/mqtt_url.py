"""Where an MQTT broker is: `mqtt://[user[:password]@]host[:port]`, `mqtts://` for TLS (also
`tcp://` and `ssl://`, as other MQTT tools spell them). The bridge and the simulator read it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @property
    def where(self) -> str:
        """For log lines: never the URL, which may carry a password."""
        return f"{self.host}:{self.port}"


def parse_broker_url(url: str) -> Broker:
    """The broker of `url`; ValueError says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ValueError("expected mqtt://[user:password@]host[:port] or mqtts://...")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ValueError("the port is not a number") from None
    return Broker(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
