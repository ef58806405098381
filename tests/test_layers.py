"""Imports go downward only: shared imports neither services nor migrations; within shared, the
domain imports no other layer and no SQLAlchemy, the contract no store, the runtime nothing above
it; the client imports nothing of the server; no blueprint imports another (they share the
modules below them)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from flask import Flask

from services.api import register_blueprints

ROOT = Path(__file__).parent.parent


def _blueprints() -> set[str]:
    """The modules of the blueprints the app registers (read off the app, not kept by hand)."""
    app = Flask(__name__)
    register_blueprints(app)
    return {blueprint.import_name for blueprint in app.blueprints.values()}


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
    blueprints = _blueprints()
    assert len(blueprints) >= 8
    for path in _sources("services/api"):
        module = _module(path)
        if module not in blueprints:
            continue
        others = {
            name
            for name in _imports(path)
            if any(name == bp or name.startswith(bp + ".") for bp in blueprints - {module})
        }
        assert not others, (module, others)


def _layer_imports(layer: str) -> dict[Path, set[str]]:
    return {path: _imports(path) for path in _sources(f"shared/{layer}")}


def _under(names: set[str], *prefixes: str) -> set[str]:
    return {name for name in names if any(name == p or name.startswith(p + ".") for p in prefixes)}


def test_the_domain_is_arithmetic_only() -> None:
    found = _layer_imports("domain")
    assert len(found) >= 5
    for path, names in found.items():
        above = _under(names, "shared.store", "shared.contract", "shared.runtime")
        frameworks = _under(names, "sqlalchemy", "flask", "celery", "kombu", "torch", "pydantic")
        assert not above and not frameworks, (path, above | frameworks)


def test_the_contract_imports_no_store() -> None:
    for path, names in _layer_imports("contract").items():
        assert not _under(names, "shared.store", "sqlalchemy"), path


def test_presenters_run_no_query() -> None:
    """They format rows already loaded; shared/store/reads.py reads what a body needs."""
    names = _imports(ROOT / "shared" / "store" / "presenters.py")
    assert not _under(names, "sqlalchemy"), names


def test_the_runtime_imports_nothing_above_it() -> None:
    for path, names in _layer_imports("runtime").items():
        assert not _under(names, "shared.store", "shared.contract", "shared.domain"), path


def test_shared_holds_only_its_layers() -> None:
    """A new module goes in the layer it belongs to (README: Where things go)."""
    loose = {path.name for path in (ROOT / "shared").glob("*.py")} - {"__init__.py"}
    assert not loose, loose


def test_the_losses_storage_is_reached_through_the_loss_store_only() -> None:
    """Writes, reads and deletes of fits' loss blocks go through the Database's `losses`
    (shared/store/loss_store.py), so that another store replaces one module, not its callers: outside
    the store's own modules, shared.store.loss_blocks lends its block format and nothing else, and
    nothing names the table, its partitions or their mechanics."""
    own = {"loss_store.py", "loss_blocks.py", "loss_partitions.py", "models.py"}
    block_format = {"shared.store.loss_blocks." + name for name in ("Block", "Curves", "encode")}
    reached = 0
    for folder in ("services", "shared"):
        for path in _sources(folder):
            if path.parent.name == "store" and path.name in own:
                continue
            names = _imports(path)
            storage = {
                name
                for name in _under(names, "shared.store.loss_blocks", "shared.store.loss_partitions")
                | _under(names, "shared.store.models.LossBlock")
                if name not in block_format and name != "shared.store.loss_blocks"
            }
            text = path.read_text()
            # `from shared.store import loss_blocks` names only the module: what it uses of it is read here.
            if "shared.store.loss_blocks" in names or "shared.store.loss_partitions" in names:
                used = set(re.findall(r"\bloss_(?:blocks|partitions)\.(\w+)", text))
                storage |= {f"loss_blocks.{name}" for name in used - {"Block", "Curves", "encode"}}
            assert not storage, (path, storage)
            reached += "losses." in text
    # The worker's writes and restarts, the API's reads, retention and the reconciler.
    assert reached >= 4, reached
