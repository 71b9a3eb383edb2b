"""Tests of operations, mirroring src/ctafleet/ops: logical backups (backup/), disaster
recovery (dr/), and the shared metrics and notification senders."""
