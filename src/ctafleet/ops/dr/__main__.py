"""`python -m ctafleet.ops.dr`: the `ctafleet dr` commands on their own."""

from ctafleet.ops.dr.cli import dr_app

dr_app(prog_name="ctafleet dr")
