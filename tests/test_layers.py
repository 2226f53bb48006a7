"""Imports point down: every module of bev_ddp imports only from its own package or a lower layer.

The layer table is read from the top-level README (section "Layers"), so the documented order and
the enforced one are the same.  Imports inside functions count too; dynamic imports
(``importlib.import_module`` of a command or task by name) are how the top reaches down lazily.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bev_ddp"


def documented_layers() -> dict[str, int]:
    """``{package or module name: layer}`` from the README's layer table (lowest layer 0)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1]
    block = section.split("```", 2)[1]
    layers: dict[str, int] = {}
    for line in block.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 2 and cells[0].isdigit():
            for name in cells[1].split():
                layers[name] = int(cells[0])
    return layers


def unit_of(module: str) -> str:
    """``bev_ddp.nn.map_decoder`` -> ``nn``: the first name below the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import statement in ``path``, at any depth."""
    out = []
    package_parts = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = package_parts[: len(package_parts) - node.level + 1]
                out.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            elif node.module:
                out.append((node.lineno, node.module))
    return out


def modules() -> list[tuple[Path, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append((path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)))
    return found


def test_readme_places_every_package_in_one_layer():
    layers = documented_layers()
    units = {unit_of(m) for _, m in modules()} - {""}
    assert units <= set(layers), f"packages missing from the README layer table: {sorted(units - set(layers))}"
    assert set(layers) <= units, f"README layer table names packages that do not exist: {sorted(set(layers) - units)}"


def test_no_import_points_up_or_sideways():
    layers = documented_layers()
    violations = []
    for path, module in modules():
        here = unit_of(module)
        for line, target in imports_of(path, module):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if target.split(".")[0] == "data_tools":
                violations.append(f"{where} (the library never imports the data_tools scripts)")
            if not target.startswith("bev_ddp.") and target != "bev_ddp":
                continue
            there = unit_of(target)
            if here == "":  # the package root is the facade on top (it re-exports bev_ddp.api lazily)
                continue
            if there and there != here and layers[there] >= layers[here]:
                kind = "up" if layers[there] > layers[here] else "sideways"
                violations.append(f"{where} ({kind}: {here} is layer {layers[here]}, {there} layer {layers[there]})")
    assert not violations, "imports that do not point down:\n" + "\n".join(violations)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    code = "from . import sibling\n\ndef f():\n    from bev_ddp.engine import trainer\n"
    path = tmp_path / "mod.py"
    path.write_text(code, encoding="utf-8")
    assert imports_of(path, "bev_ddp.nn.mod") == [(1, "bev_ddp.nn"), (4, "bev_ddp.engine")]
