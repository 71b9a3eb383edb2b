"""Query-string filters shared by the lists: one value or several, comma-separated."""

from __future__ import annotations

from typing import Any, get_args

from fastapi import Query


def any_of(choices: Any, description: str = "") -> Any:
    """A query parameter taking one of `choices` (a Literal) or several, comma-separated
    (`status=active,in_shop`): any of them matches."""
    values = get_args(choices)
    one = "|".join(values)
    return Query(
        None,
        pattern=f"^({one})(,({one}))*$",
        max_length=sum(len(v) + 1 for v in values),
        description=(description + " " if description else "")
        + f"One or several of {', '.join(f'`{v}`' for v in values)}, comma-separated.",
    )


def values(raw: str | None) -> list[str] | None:
    """The values of a comma-separated filter, None when absent."""
    if raw is None:
        return None
    return sorted({v for v in raw.split(",") if v})
