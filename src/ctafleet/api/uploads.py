"""Request bodies that are files: CSV uploads for imports."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ctafleet.api.problems import Problem

CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "CSV, UTF-8, with a header row naming the columns.",
    }
}


async def csv_text(request: Request) -> str:
    """The body as CSV text; a clear 4xx for anything else."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("text/csv", "text/plain", "application/csv"):
        raise Problem(415, "unsupported-media-type", "send the file as text/csv")
    raw = await request.body()
    if not raw.strip():
        raise Problem(422, "import-invalid", "the file is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(
            422, "import-invalid", f"the file is not UTF-8 text (byte {exc.start})"
        ) from exc
