"""How every `ctafleet` command prints its help.

Plain help (click's formatter) rather than Typer's boxed tables: those are cut to the
terminal's width (80 columns when piped or in CI) and truncate long option names
(`--forwarded-allo…`); plain help wraps the descriptions and keeps every option whole.
"""

from typing import Any

HELP: dict[str, Any] = {
    "rich_markup_mode": None,
    "context_settings": {"max_content_width": 100, "help_option_names": ["-h", "--help"]},
}
