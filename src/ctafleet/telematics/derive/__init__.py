"""Derived telemetry data: trips, stops, odometer, engine time and events from raw points.

Pure functions over `ctafleet.telematics.points.Point`: no database, framework or clock. The
worker calls `advance` per device with each committed batch and stores the returned state;
a periodic job calls `offline`; map and export endpoints use `track`.
"""

from ctafleet.telematics.derive.engine import Advance, advance, offline
from ctafleet.telematics.derive.events import Event, EventSink, EventType
from ctafleet.telematics.derive.geofences import Geofence, GeofenceSet, Schedule, Window
from ctafleet.telematics.derive.rules import Rules
from ctafleet.telematics.derive.state import DeviceState
from ctafleet.telematics.derive.trips import Stop, Trip

__all__ = [
    "Advance",
    "DeviceState",
    "Event",
    "EventSink",
    "EventType",
    "Geofence",
    "GeofenceSet",
    "Rules",
    "Schedule",
    "Stop",
    "Trip",
    "Window",
    "advance",
    "offline",
]
