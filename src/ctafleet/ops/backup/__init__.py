"""Logical backups of the database: `ctafleet backup create|list|verify|restore|prune`.

`service.Backups` does the work against any `ObjectStore`; `cli.backup_app` is the command.
docs/backup-and-dr.md is the operator's guide.
"""
