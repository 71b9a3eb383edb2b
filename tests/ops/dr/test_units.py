"""The parts of `ctafleet dr` that need no server: parsing, URLs, env files."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from ctafleet.ops.dr.failover import mask, repoint, update_env_file
from ctafleet.ops.dr.pgbackrest import parse_config
from ctafleet.ops.dr.postgres import parse_url
from ctafleet.ops.dr.proc import DrError
from ctafleet.ops.dr.restore import normalise_target_time
from ctafleet.ops.dr.status import _segment_start_after

NOW = dt.datetime(2026, 3, 1, 15, 0, tzinfo=dt.UTC)


def test_target_time_needs_an_offset_and_a_past_moment() -> None:
    assert normalise_target_time("2026-03-01T14:05:00Z", NOW) == "2026-03-01 14:05:00+00:00"
    assert (
        normalise_target_time("2026-03-01 16:05:00.25+02:00", NOW)
        == "2026-03-01 14:05:00.250000+00:00"
    )
    with pytest.raises(DrError, match="no UTC offset"):
        normalise_target_time("2026-03-01T14:05:00", NOW)
    with pytest.raises(DrError, match="future"):
        normalise_target_time("2026-03-01T15:00:01Z", NOW)
    with pytest.raises(DrError, match="ISO 8601"):
        normalise_target_time("yesterday", NOW)


def test_connection_urls_in_every_accepted_form() -> None:
    tcp = parse_url("postgresql+asyncpg://app:pw@db1:6432/ctafleet")
    assert (tcp.host, tcp.port, tcp.user, tcp.password, tcp.database) == (
        "db1", 6432, "app", "pw", "ctafleet"
    )  # fmt: skip
    sock = parse_url("postgres://postgres@/postgres?host=/run/pg&port=5499")
    assert (sock.host, sock.port, sock.is_socket) == ("/run/pg", 5499, True)
    assert parse_url(sock.url()) == sock
    # What a DR command assumes when the URL does not say: the server's own account.
    bare = parse_url("postgresql://")
    assert (bare.host, bare.port, bare.user, bare.database) == (
        "/var/run/postgresql", 5432, "postgres", "postgres"
    )  # fmt: skip
    with pytest.raises(DrError, match="not a PostgreSQL URL"):
        parse_url("sqlite:///data/ctafleet.db")


def test_failover_repoints_urls_and_keeps_the_rest() -> None:
    old = "postgresql+asyncpg://ctafleet_app:s3cret@db1:5432/ctafleet?ssl=require"
    new = repoint(old, "db2", 5433)
    assert new == "postgresql+asyncpg://ctafleet_app:s3cret@db2:5433/ctafleet?ssl=require"
    assert "s3cret" not in mask(new)


def test_env_file_update_keeps_other_lines_and_is_private(tmp_path: Path) -> None:
    env = tmp_path / "ctafleet.env"
    env.write_text("# comment\nCTAFLEET_DEBUG=false\nCTAFLEET_DATABASE__URL=old\n")
    update_env_file(env, {"CTAFLEET_DATABASE__URL": "new", "CTAFLEET_DATABASE__ADMIN_URL": "a"})
    assert env.read_text().splitlines() == [
        "# comment",
        "CTAFLEET_DEBUG=false",
        "CTAFLEET_DATABASE__URL=new",
        "CTAFLEET_DATABASE__ADMIN_URL=a",
    ]
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_pgbackrest_config_parser() -> None:
    sections = parse_config("# c\n[global]\nrepo1-path=/r\n\n[ctafleet]\npg1-path = /d\n")
    assert sections == {"global": {"repo1-path": "/r"}, "ctafleet": {"pg1-path": "/d"}}
    with pytest.raises(DrError, match="line 2"):
        parse_config("[global]\nnot an option\n")


def test_segment_arithmetic() -> None:
    size = 16 * 1024 * 1024
    assert _segment_start_after("000000010000000000000006", size) == 7 * size
    assert _segment_start_after("0000000100000001000000FF", size) == (0x100 + 0x100) * size
    assert _segment_start_after("00000002.history", size) is None
