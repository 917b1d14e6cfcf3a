"""The layers' arrows (docs/architecture.md): each module's imports, read from its source, point only down.

    project wiring (operatorapi.settings / asgi / urls)
    transport (the rest of operatorapi)      back office (backoffice)
    settlement
    channels_app
    library shims (operatorapi.compat)
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_MODULES = {"operatorapi.settings", "operatorapi.asgi", "operatorapi.urls"}
# layer -> the layers it may import (its own included)
ALLOWED = {
    "compat": {"compat"},
    "channels": {"channels", "compat"},
    "settlement": {"settlement", "channels", "compat"},
    "transport": {"transport", "settlement", "channels", "compat"},
    "backoffice": {"backoffice", "settlement", "channels", "compat"},
    "project": {"project", "transport", "backoffice", "settlement", "channels", "compat"},
}


def layer_of(module: str) -> str | None:
    top = module.split(".")[0]
    if module == "operatorapi.compat" or module.startswith("operatorapi.compat."):
        return "compat"
    if module in PROJECT_MODULES:
        return "project"
    return {"operatorapi": "transport", "channels_app": "channels", "settlement": "settlement",
            "backoffice": "backoffice"}.get(top)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Every module ``source`` imports, at any depth (function-level imports too), relative ones resolved."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:  # "from pkg import module" imports the module; "from module import name" it
                found.add(f"{target}.{alias.name}" if is_module(f"{target}.{alias.name}") else target)
    return found


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def violations(files) -> list[str]:
    found = []
    for path, source in files:
        module = module_name(path)
        layer = layer_of(module)
        if layer is None:
            continue
        for target in imported_modules(source, module, path.name == "__init__.py"):
            target_layer = layer_of(target)
            if target_layer is not None and target_layer not in ALLOWED[layer]:
                found.append(f"{module} ({layer}) imports {target} ({target_layer})")
    return sorted(set(found))


def project_files():
    for package in ("operatorapi", "channels_app", "settlement", "backoffice"):
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, path.read_text()


def test_every_import_points_down_the_layers():
    assert violations(project_files()) == []


@pytest.mark.parametrize("path, source", [
    ("channels_app/services/x.py", "from operatorapi.payloads import position_payload\n"),
    ("channels_app/x.py", "def f():\n    from operatorapi import consumers\n"),
    ("channels_app/x.py", "from settlement.models import Settlement\n"),
    ("settlement/x.py", "from backoffice import actions\n"),
    ("backoffice/x.py", "from operatorapi.publisher import publish\n"),
    ("operatorapi/consumers.py", "from backoffice.audit import record\n"),
    ("operatorapi/compat/x.py", "from channels_app import models\n"),
])
def test_an_import_against_the_arrows_is_found(path, source):
    assert len(violations([(ROOT / path, source)])) == 1
