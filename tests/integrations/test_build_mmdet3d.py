"""tools/build_mmdet3d.py: the two fixes to mmcv 2.1.0's setup.py, and the wheel cache (no build here)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("build_mmdet3d", ROOT / "tools" / "build_mmdet3d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the lines of mmcv 2.1.0's setup.py that the fixes touch, as released
SETUP_LINES = """import re
from pkg_resources import DistributionNotFound, get_distribution, parse_version
from setuptools import find_packages, setup
extra_compile_args = {
    'nvcc': [cuda_args, '-std=c++14'] if cuda_args else ['-std=c++14'],
    'cxx': ['-std=c++14'],
}
if parse_version(torch.__version__) <= parse_version('1.12.1'):
    extra_compile_args['cxx'] = ['-std=c++14']
else:
    extra_compile_args['cxx'] = ['-std=c++17']
    extra_compile_args['cxx'] = ['/std:c++17']
"""


def test_patch_replaces_pkg_resources_and_raises_the_cxx_standard():
    patched = _script().patch_setup(SETUP_LINES)
    assert "pkg_resources" not in patched and "c++14" not in patched and "c++17" not in patched
    assert patched.count("-std=c++20") == 5 and patched.count("/std:c++20") == 1
    namespace: dict = {}
    exec(patched.split("from setuptools")[0], namespace)  # the replacement imports work
    assert namespace["parse_version"]("2.14.1") > namespace["parse_version"]("1.12.1")
    with pytest.raises(namespace["DistributionNotFound"]):
        namespace["get_distribution"]("no-such-distribution-here")


def test_patch_refuses_a_setup_py_it_does_not_know():
    with pytest.raises(RuntimeError, match="pkg_resources"):
        _script().patch_setup("from setuptools import setup\n")


def test_a_cached_wheel_is_reused_without_building(tmp_path, monkeypatch, capsys):
    script = _script()
    monkeypatch.setenv("FORCE_CUDA", "0")
    cache = script.cache_dir(tmp_path, cuda=False)
    assert "cpu" in cache.name and "torch" in cache.name
    cache.mkdir(parents=True)
    (cache / "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    monkeypatch.setattr(script, "build_wheel", lambda *a: pytest.fail("built although a wheel was cached"))
    assert script.main(["--cache", str(tmp_path), "--build-only"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert "numba" in script.extra_requirements("mmdet3d")
