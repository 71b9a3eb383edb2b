"""The layering the architecture promises, held by the code's own imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ctafleet"
WEB_FRAMEWORKS = ("fastapi", "starlette", "uvicorn", "ctafleet.api")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(folder: str, pattern: str = "*.py") -> list[Path]:
    return sorted((SRC / folder).rglob(pattern)) if folder else sorted(SRC.rglob(pattern))


SERVICES = [
    p
    for p in SRC.rglob("*.py")
    if p.name in ("service.py", "users.py", "imports.py", "visibility.py", "metrics.py")
    and "observability" not in p.parts
    and "ops" not in p.parts
]


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: str(p.relative_to(SRC)))
def test_services_are_framework_free(path: Path) -> None:
    web = sorted(m for m in _imports(path) if m.startswith(WEB_FRAMEWORKS))
    assert not web, f"{path.relative_to(SRC)} imports {web}: services raise domain errors"


def test_the_kernel_imports_only_itself() -> None:
    for path in _modules("kernel"):
        outside = sorted(
            m
            for m in _imports(path)
            if m.startswith("ctafleet") and not m.startswith("ctafleet.kernel")
        )
        assert not outside, (path.name, outside)
        assert not any(m.startswith(("fastapi", "starlette", "sqlalchemy")) for m in _imports(path))


def test_db_imports_no_layer_above_it() -> None:
    allowed = ("ctafleet.kernel", "ctafleet.config", "ctafleet.db")
    for path in _modules("db"):
        if "versions" in path.parts:
            continue
        above = sorted(
            m for m in _imports(path) if m.startswith("ctafleet") and not m.startswith(allowed)
        )
        assert not above, (str(path.relative_to(SRC)), above)


def test_only_the_top_imports_the_list_of_domains() -> None:
    importers = {
        str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "ctafleet.domains" in _imports(p)
    }
    assert importers <= {"app.py", "cli.py"}, importers


def test_pre_commit_runs_what_make_lint_and_types_run() -> None:
    hooks = (ROOT / ".pre-commit-config.yaml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for command in ("ruff check", "ruff format --check", "mypy"):
        assert command in hooks, command
        assert f"$(BIN)/{command}" in makefile, command
