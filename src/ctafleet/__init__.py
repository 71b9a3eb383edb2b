"""CTAFleet: multi-tenant fleet management."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctafleet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
