"""Telematics: devices and their credentials (and, as it grows, ingest, positions, trips)."""
