"""Every third-party package the code imports is declared: the library's imports in
``setup.py`` (``install_requires`` or an extra) and ``requirements.txt``, the tests' imports in
``requirements.txt``.  Imports are found by walking the source with ``ast`` (lazy imports inside
functions included); a module is mapped to the distribution that installed it."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"bev_ddp", "data_tools", "ops", "setup"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(lines) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.add(_normalise(match.group(1)))
    return names


def _setup_requirements(*, extra: str | None = None) -> set[str]:
    """install_requires and every extra, or with ``extra`` that extra's requirements alone."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}
    if extra is not None:
        return _requirement_names(keywords["extras_require"][extra])
    extras = [r for group in keywords.get("extras_require", {}).values() for r in group]
    return _requirement_names([*keywords["install_requires"], *extras])


# the optional front ends and their tests: declared by their extra, checked where it is installed
INTEGRATIONS = (ROOT / "bev_ddp" / "integrations", ROOT / "tests" / "integrations")


def _openmmlab_pins() -> set[str]:
    """The packages tools/build_mmdet3d.py installs for the mmdet3d extra (mmcv and ``OPENMMLAB``)."""
    tree = ast.parse((ROOT / "tools" / "build_mmdet3d.py").read_text())
    pins = next(ast.literal_eval(n.value) for n in ast.walk(tree)
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "OPENMMLAB")
    return _requirement_names(["mmcv", *pins])


def _imported_modules(folders: list[Path]) -> dict[str, set[str]]:
    """Top-level third-party module → files importing it."""
    local = {p.stem for folder in folders for p in folder.rglob("*.py")}  # test helpers imported by name
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in folder.rglob("*.py"):
            if folder not in INTEGRATIONS and any(path.is_relative_to(f) for f in INTEGRATIONS):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in FIRST_PARTY or top in local or top == "__future__":
                        continue
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _undeclared(folders: list[Path], declared: set[str]) -> list[str]:
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, files in sorted(_imported_modules(folders).items()):
        dists = {_normalise(d) for d in providers.get(module, [])}
        if not dists:
            missing.append(f"{module} (no installed distribution provides it; imported in {sorted(files)[0]})")
        elif not dists & declared:
            missing.append(f"{module} from {sorted(dists)} (imported in {sorted(files)[0]})")
    return missing


def test_library_imports_are_declared_in_setup_and_requirements():
    folders = [ROOT / "bev_ddp", ROOT / "data_tools"]
    assert not _undeclared(folders, _setup_requirements()), "not in setup.py"
    requirements = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    assert not _undeclared(folders, requirements), "not in requirements.txt"


def test_test_imports_are_declared_in_requirements():
    requirements = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    assert not _undeclared([ROOT / "tests"], requirements)


def test_integration_imports_are_declared_in_their_extra():
    pytest.importorskip("mmdet3d", reason="the mmdet3d extra is not installed (make mmdet3d)")
    declared = _setup_requirements() | _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    declared |= _setup_requirements(extra="mmdet3d") | _openmmlab_pins()
    assert not _undeclared(list(INTEGRATIONS), declared)
    assert {"mmcv", "mmengine", "mmdet3d"} <= _openmmlab_pins()


def test_the_walk_finds_lazy_imports_and_maps_them_to_distributions():
    modules = _imported_modules([ROOT / "bev_ddp"])
    assert "pyquaternion" in modules and "mcap_protobuf" in modules  # the latter only inside functions
    assert "cv2" in modules and "bev_ddp" not in modules and "json" not in modules
    with pytest.raises(AssertionError):
        assert not _undeclared([ROOT / "bev_ddp"], _setup_requirements() - {"pyquaternion"})
