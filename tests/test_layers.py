"""Imports go downward only: shared imports neither services nor migrations; the client imports
nothing of the server; no blueprint imports another (they share the modules below them)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
BLUEPRINTS = {
    "services.api.fits",
    "services.api.batches",
    "services.api.instruments",
    "services.api.webhooks",
    "services.api.usage",
    "services.api.ops",
    "services.api.openapi",
    "services.api.ui",
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _sources(folder: str) -> list[Path]:
    return [p for p in (ROOT / folder).rglob("*.py") if "build" not in p.parts]


def test_shared_imports_neither_services_nor_migrations() -> None:
    for path in _sources("shared"):
        upward = {name for name in _imports(path) if name.split(".")[0] in ("services", "migrations")}
        assert not upward, (path, upward)


def test_the_client_imports_nothing_of_the_server() -> None:
    for path in _sources("services/client"):
        server = {name for name in _imports(path) if name.split(".")[0] in ("services", "shared", "migrations")}
        assert not server, (path, server)


def test_no_blueprint_imports_another() -> None:
    for path in _sources("services/api"):
        module = _module(path)
        if module not in BLUEPRINTS:
            continue
        others = {
            name
            for name in _imports(path)
            if any(name == bp or name.startswith(bp + ".") for bp in BLUEPRINTS - {module})
        }
        assert not others, (module, others)
