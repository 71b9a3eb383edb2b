"""Errors of the backup commands, each with the exit code the command ends with.

Exit codes (documented in docs/backup-and-dr.md): 0 success, 1 failure, 2 usage or settings,
3 refused target (not empty, no `--force`/`--yes`), 4 integrity (checksum or contents differ).
"""

from __future__ import annotations


class BackupError(Exception):
    """A backup command failed; the message is shown as is and never holds a secret."""

    exit_code = 1


class ConfigurationError(BackupError):
    exit_code = 2


class TargetNotEmptyError(BackupError):
    exit_code = 3


class IntegrityFailure(BackupError):
    """The stored backup or the restored data is not what the manifest says."""

    exit_code = 4


class WrongKeyError(BackupError):
    """None of the given identities can decrypt the backup."""
