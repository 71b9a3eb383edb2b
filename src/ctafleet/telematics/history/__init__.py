"""Reads of derived telemetry: a vehicle's trips, the tenant's events, a device's track."""
