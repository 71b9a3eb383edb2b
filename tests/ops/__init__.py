"""Tests of operations: logical backups (test_backup_*.py) and disaster recovery (dr/)."""
