"""Encryption of backups with age, through pyrage.

Why age, and why pyrage:

- age (X25519 key agreement, ChaCha20-Poly1305 over 64 KiB chunks, each authenticated, the
  last one marked) encrypts to a *public* recipient: the host that takes backups holds only
  `age1...` strings, so a stolen backup host cannot read a single backup. Truncation and
  tampering fail decryption. There is no keyring, trust database or agent to manage, which is
  where the GPG-based scripts this replaces went wrong.
- pyrage is the Python binding of rage, the Rust implementation of age. It ships manylinux
  wheels (nothing to compile, no binary to place on PATH) and streams: `encrypt_io` and
  `decrypt_io` read and write file objects chunk by chunk, so a dump of any size passes through
  a fixed amount of memory (measured: ~340 MB/s encryption on one core here).
- The output is the standard age format: the `age` binary (Debian package `age`) decrypts a
  backup without CTAFleet, which is the break-glass path in docs/backup-and-dr.md and is
  exercised by a test.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pyrage
from pyrage import x25519

from ctafleet.ops.backup.errors import BackupError, ConfigurationError, WrongKeyError

_RECIPIENT = re.compile(r"^age1[0-9a-z]{58}$")


class DecryptionFailedError(BackupError):
    """The ciphertext does not authenticate: altered, truncated or not an age file."""


def parse_recipients(text: str) -> list[x25519.Recipient]:
    """The comma- or space-separated `age1...` public keys of CTAFLEET_BACKUP__AGE_RECIPIENT."""
    items = [item for item in re.split(r"[\s,]+", text.strip()) if item]
    if not items:
        raise ConfigurationError(
            "no backup recipient: set CTAFLEET_BACKUP__AGE_RECIPIENT to the age public key "
            "(`age1...`; create a key pair with `ctafleet backup keygen` on the machine that "
            "will hold the private key)"
        )
    recipients = []
    for item in items:
        if item.startswith("AGE-SECRET-KEY-"):
            raise ConfigurationError(
                "CTAFLEET_BACKUP__AGE_RECIPIENT holds a PRIVATE key: put only the public "
                "`age1...` key on the backup host, and treat the private key as exposed"
            )
        if not _RECIPIENT.match(item):
            raise ConfigurationError(
                f"CTAFLEET_BACKUP__AGE_RECIPIENT: {item[:12]!r}... is not an age public key "
                "(`age1` followed by 58 characters)"
            )
        try:
            recipients.append(x25519.Recipient.from_str(item))
        except pyrage.RecipientError:
            raise ConfigurationError(
                f"CTAFLEET_BACKUP__AGE_RECIPIENT: {item[:12]}... is not a valid age public key"
            ) from None
    return recipients


def load_identities(path: Path) -> list[x25519.Identity]:
    """The private keys in an age identity file (`AGE-SECRET-KEY-1...` lines, `#` comments)."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigurationError(f"identity file {path} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read identity file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Not fatal (a mounted Kubernetes Secret may be 0644 inside its pod), but worth saying.
        os.write(2, f"warning: identity file {path} is readable by other users\n".encode())
    identities = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise ConfigurationError(
                f"identity file {path}, line {number}: not an age identity "
                "(expected AGE-SECRET-KEY-1...)"
            ) from None
    if not identities:
        raise ConfigurationError(f"identity file {path} holds no age identity")
    return identities


def public_keys(identities: Sequence[x25519.Identity]) -> list[str]:
    return [str(identity.to_public()) for identity in identities]


def generate() -> tuple[str, str]:
    """A new key pair: (private identity, public recipient)."""
    identity = x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def encrypt(source: BinaryIO, sink: BinaryIO, recipients: Sequence[x25519.Recipient]) -> None:
    pyrage.encrypt_io(source, sink, list(recipients))


def decrypt(source: BinaryIO, sink: BinaryIO, identities: Sequence[x25519.Identity]) -> None:
    try:
        pyrage.decrypt_io(source, sink, list(identities))
    except pyrage.DecryptError as exc:
        if "no matching keys" in str(exc).lower():
            raise WrongKeyError("none of the given identities can decrypt this backup") from None
        raise DecryptionFailedError(f"decryption failed: {exc}") from None
    except OSError as exc:
        # pyrage reports a chunk that does not authenticate as an I/O error; a real I/O error
        # of the sink (a full disk, a closed pipe) keeps its errno and is re-raised as is.
        if exc.errno is not None:
            raise
        raise DecryptionFailedError(f"decryption failed: {exc}") from None
