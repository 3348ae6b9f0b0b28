"""Imports point downward: core, analysis and simulation stay pure (STYLE.md 'Layout')."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "cmvtrial"
PURE_LAYERS = ["core", "analysis", "simulation"]
FORBIDDEN_IN_PURE = {
    "sqlalchemy", "alembic", "fastapi", "starlette", "typer", "click", "rich", "psycopg",
    "uvicorn", "jinja2", "httpx", "requests", "os", "pathlib", "subprocess", "socket",
    "cmvtrial.store", "cmvtrial.services", "cmvtrial.adapters", "cmvtrial.config",
}
LAYER_MAY_NOT_IMPORT = {
    "store": {"cmvtrial.services", "cmvtrial.adapters"},
    "services": {"cmvtrial.adapters"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(path: Path, forbidden: set[str]) -> list[str]:
    return sorted(
        name
        for name in imported_modules(path)
        if any(name == bad or name.startswith(bad + ".") for bad in forbidden)
    )


def python_files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_do_no_io(layer):
    found = {str(p.relative_to(PACKAGE)): violations(p, FORBIDDEN_IN_PURE) for p in python_files(layer)}
    assert {k: v for k, v in found.items() if v} == {}


@pytest.mark.parametrize("layer", sorted(LAYER_MAY_NOT_IMPORT))
def test_imports_point_down(layer):
    forbidden = LAYER_MAY_NOT_IMPORT[layer]
    found = {str(p.relative_to(PACKAGE)): violations(p, forbidden) for p in python_files(layer)}
    assert {k: v for k, v in found.items() if v} == {}
