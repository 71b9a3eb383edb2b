"""The CSV import route of a fleet aggregate (vehicles, drivers): one definition for both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from ctafleet.api.uploads import CSV_BODY, csv_text
from ctafleet.auth.deps import Ctx, require
from ctafleet.auth.permissions import Permission
from ctafleet.fleet.imports import ImportReport, ImportResult

Importer = Callable[..., Awaitable[ImportResult]]


def add_import_route(
    router: APIRouter, *, plural: str, key: str, permission: Permission, run: Importer
) -> None:
    """`POST <router prefix>/import`: a CSV file, every row or none (see fleet/imports.py)."""

    async def import_csv(
        request: Request,
        dry_run: bool = Query(False, description="Check the file and count; write nothing."),
        ctx: Ctx = Depends(require(permission)),
    ) -> Any:
        text = await csv_text(request)
        result = await run(session=ctx.session, actor=ctx.actor, text=text, dry_run=dry_run)
        return result.report()

    router.add_api_route(
        "/import",
        import_csv,
        methods=["POST"],
        name=f"import_{plural}",
        response_model=ImportReport,
        summary=f"Import {plural} from CSV (all rows or none; dry_run checks only)",
        description="A header row names the columns (the fields of a create). Rows are matched "
        f"on `{key}`: a new one is created, a changed one updated, an equal one left alone. "
        "Any problem in any row: `422 import-invalid` listing every problem with its row number "
        '(`loc: ["row", n, field]`), and nothing is written.',
        openapi_extra=CSV_BODY,
    )
