"""The package's layers: every import of phr_cli reaches its own package or one listed before it."""

from __future__ import annotations

import ast
from pathlib import Path

import phr_cli

PACKAGE = Path(phr_cli.__file__).parent
# Bottom first: the pipeline's stages, each built on the ones before it. Top-level modules
# (errors, choices, files, devices, progress) sit below them all.
LAYERS = ["data", "encoders", "extract", "model", "evaluation", "ranking", "training", "serving", "cli"]


def layer_of(module: str) -> int:
    """-1 for phr_cli's top-level modules, else the index of the module's package in LAYERS."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else -1


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every phr_cli import in a file, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("phr_cli"):
            if node.module == "phr_cli":  # `from phr_cli import decode`: modules by name
                found += [(node.lineno, f"phr_cli.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("phr_cli")]
    return found


def test_every_import_reaches_down_or_across():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("phr_cli", *path.relative_to(PACKAGE).with_suffix("").parts))
        if module in ("phr_cli.__main__", "phr_cli.__init__"):
            continue
        own = layer_of(module)
        for line, imported in imported_modules(path):
            if imported != "phr_cli" and layer_of(imported) > own:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
    assert not upward, "imports that reach up a layer:\n" + "\n".join(upward)


def test_every_package_maps_its_files():
    for package in LAYERS:
        init = PACKAGE / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        modules = sorted(p.stem for p in init.parent.glob("*.py") if p.stem != "__init__")
        missing = [name for name in modules if f"`{name}`" not in doc]
        assert not missing, f"phr_cli/{package}/__init__.py does not name {missing}"
