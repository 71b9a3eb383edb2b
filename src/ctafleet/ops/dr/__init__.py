"""Disaster recovery: physical backups and PITR with pgBackRest, drills, failover.

`ctafleet dr` (ops/dr/cli.py) is the entry point; docs/backup-and-dr.md is the operator's
guide. Logical backups (`ctafleet backup`) are another package; drills reach them only
through that command's CLI, so either side can change its internals freely.
"""
