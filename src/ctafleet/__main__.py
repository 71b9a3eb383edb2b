"""`python -m ctafleet`: the same command as `ctafleet`."""

from ctafleet.cli import app

app(prog_name="ctafleet")
