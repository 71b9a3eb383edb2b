"""Geofences: named areas (polygons, circles) that the derive engine turns into enter, exit,
dwell and zone-speed events."""
