"""SI inside, the tenant's units outside: every conversion lives here.

Stored and sent by the API: metres, seconds, litres, metres per second, kWh. Displayed: the
tenant's `display_units` (`metric`: km, km/h, litres; `imperial`: miles, mph, US gallons).
"""

from __future__ import annotations

from typing import Literal

DisplayUnits = Literal["metric", "imperial"]

METRES_PER_MILE = 1609.344
METRES_PER_KM = 1000.0
LITRES_PER_US_GALLON = 3.785411784
MPS_PER_KNOT = 1852.0 / 3600.0
MPS_PER_KMH = 1000.0 / 3600.0
MPS_PER_MPH = METRES_PER_MILE / 3600.0
SECONDS_PER_HOUR = 3600


def knots_to_mps(knots: float) -> float:
    return knots * MPS_PER_KNOT


def kmh_to_mps(kmh: float) -> float:
    return kmh * MPS_PER_KMH


def distance(metres: float, units: DisplayUnits) -> float:
    """Metres in the display unit: kilometres or miles."""
    return metres / (METRES_PER_MILE if units == "imperial" else METRES_PER_KM)


def distance_to_metres(value: float, units: DisplayUnits) -> float:
    return value * (METRES_PER_MILE if units == "imperial" else METRES_PER_KM)


def speed(mps: float, units: DisplayUnits) -> float:
    """Metres per second in the display unit: km/h or mph."""
    return mps / (MPS_PER_MPH if units == "imperial" else MPS_PER_KMH)


def volume(litres: float, units: DisplayUnits) -> float:
    """Litres in the display unit: litres or US gallons."""
    return litres / LITRES_PER_US_GALLON if units == "imperial" else litres


def volume_to_litres(value: float, units: DisplayUnits) -> float:
    return value * LITRES_PER_US_GALLON if units == "imperial" else value


def fuel_efficiency(metres: float, litres: float, units: DisplayUnits) -> float | None:
    """Miles per US gallon (imperial) or litres per 100 km (metric); None without fuel or
    distance."""
    if metres <= 0 or litres <= 0:
        return None
    if units == "imperial":
        return (metres / METRES_PER_MILE) / (litres / LITRES_PER_US_GALLON)
    return litres / (metres / METRES_PER_KM) * 100


def hours(seconds: float) -> float:
    return seconds / SECONDS_PER_HOUR
