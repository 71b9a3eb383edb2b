"""The spherical helpers everything else measures with."""

from __future__ import annotations

import pytest

from ctafleet.telematics.derive.geo import (
    bearing_deg,
    destination,
    from_local,
    haversine_m,
    plausible_position,
    to_local,
)


def test_a_degree_of_latitude_and_of_longitude_at_60() -> None:
    assert haversine_m(60.0, 24.0, 61.0, 24.0) == pytest.approx(111_195.08, abs=0.01)
    # Half as long at 60 degrees north.
    assert haversine_m(60.0, 24.0, 60.0, 25.0) == pytest.approx(55_597.5, rel=1e-3)
    assert haversine_m(10.0, 179.9, 10.0, -179.9) == pytest.approx(21_898.0, rel=1e-3)


@pytest.mark.parametrize(("lat", "lon"), [(60.17, 24.94), (-33.9, -70.6), (0.0, 179.99)])
def test_destination_bearing_and_local_projection_invert_each_other(lat: float, lon: float) -> None:
    for bearing in (0.0, 33.0, 90.0, 200.0, 359.0):
        there = destination(lat, lon, bearing, 1234.5)
        assert haversine_m(lat, lon, *there) == pytest.approx(1234.5, abs=1e-6)
        turn = (bearing_deg(lat, lon, *there) - bearing + 180.0) % 360.0 - 180.0
        assert turn == pytest.approx(0.0, abs=1e-6)
        x, y = to_local(*there, lat, lon)
        assert from_local(x, y, lat, lon) == pytest.approx(there, abs=1e-9)


def test_plausible_positions() -> None:
    assert plausible_position(60.0, 24.0)
    assert not plausible_position(0.0, 0.0)
    assert not plausible_position(91.0, 0.0)
    assert not plausible_position(float("nan"), 1.0)
