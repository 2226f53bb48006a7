"""Build and install the ``mmdet3d`` extra: mmcv 2.1.0 (compiled ops), mmengine, mmdet and mmdet3d.

mmcv 2.1.0 publishes no wheel for current torch, and its ``setup.py`` does not build as released:
it imports ``pkg_resources`` (gone from current setuptools) and compiles with ``-std=c++14/17``
where torch >= 2.10 headers need C++20.  This script takes the source distribution from the package
index (sha256 pinned), applies those two fixes, builds a wheel against the torch of the running
interpreter (CPU ops always; CUDA ops too when ``nvcc`` is on PATH and torch sees a GPU, or with
``FORCE_CUDA=1``) and keeps it in a cache keyed by torch version and ops, so later runs on the same
machine reuse it.  Then it installs the wheel, the pinned OpenMMLab packages (``OPENMMLAB``, without
their declared dependencies) and setup.py's ``mmdet3d`` extra into the same interpreter.

Usage (``make mmdet3d`` runs it with the project venv's python)::

    python tools/build_mmdet3d.py [--cache DIR] [--jobs N] [--build-only]

The cache is ``$BEV_DDP_WHEEL_CACHE`` or ``~/.cache/bev_ddp/wheels``.  The source distribution comes
from ``$MMCV_SDIST`` (a local file) when set, else from ``$MMCV_INDEX_URL`` (default PyPI's JSON
simple index; ``pip download`` cannot fetch it: pip runs the unfixed ``setup.py`` to read its metadata).  Exit 2 on bad arguments,
non-zero when a build or install step fails.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MMCV_VERSION = "2.1.0"
MMCV_SDIST = "mmcv-2.1.0.tar.gz"
MMCV_SHA256 = "d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f"
INDEX_URL = os.environ.get("MMCV_INDEX_URL", "https://pypi.org/simple/mmcv/")  # a PEP 691 (JSON) simple index
# the OpenMMLab stack that runs on mmcv 2.1 (mmdet3d 1.4 pins mmcv < 2.2, mmdet 3.2 likewise) and the Lyft
# SDK mmdet3d imports, installed without their declared dependencies (see setup.py's "mmdet3d" extra)
OPENMMLAB = ("mmengine==0.10.7", "mmdet==3.2.0", "mmdet3d==1.4.0", "lyft_dataset_sdk==0.0.8")

# setup.py line 5 of mmcv 2.1.0, and what replaces it
PKG_RESOURCES_IMPORT = "from pkg_resources import DistributionNotFound, get_distribution, parse_version\n"
IMPORTLIB_IMPORT = (
    "from importlib.metadata import PackageNotFoundError as DistributionNotFound\n"
    "from importlib.metadata import distribution as get_distribution\n"
    "from packaging.version import parse as parse_version\n"
)
OLD_STD = re.compile(r"([-/])std[=:]c\+\+1[47]")


def patch_setup(text: str) -> str:
    """Return mmcv's ``setup.py`` text with the two fixes applied (raises if either is not found)."""
    if PKG_RESOURCES_IMPORT not in text:
        raise RuntimeError("mmcv setup.py: the pkg_resources import to replace is not there")
    text = text.replace(PKG_RESOURCES_IMPORT, IMPORTLIB_IMPORT)
    text, n = OLD_STD.subn(lambda m: f"{m.group(1)}std{'=' if m.group(1) == '-' else ':'}c++20", text)
    if n == 0:
        raise RuntimeError("mmcv setup.py: no -std=c++14/17 flag to raise to c++20")
    return text


def with_cuda() -> bool:
    """Build the CUDA ops too: ``FORCE_CUDA`` decides when set, else nvcc on PATH and a visible GPU."""
    if "FORCE_CUDA" in os.environ:
        return os.environ["FORCE_CUDA"] == "1"
    import torch

    return shutil.which("nvcc") is not None and torch.cuda.is_available()


def cache_dir(root: Path, cuda: bool) -> Path:
    """One cache folder per (python, torch, ops) so a wheel is reused only where it was built for."""
    import torch

    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}-{'cuda' if cuda else 'cpu'}"
    return root / tag


def fetch_sdist(dest: Path) -> Path:
    """Download mmcv's source distribution from the index and check its pinned sha256."""
    request = urllib.request.Request(INDEX_URL, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=180) as response:
        files = json.load(response)["files"]
    url = next(f["url"] for f in files if f["filename"] == MMCV_SDIST)
    path = dest / MMCV_SDIST
    with urllib.request.urlopen(url, timeout=180) as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MMCV_SHA256:
        raise RuntimeError(f"{MMCV_SDIST}: sha256 {digest} is not the pinned {MMCV_SHA256}")
    return path


def build_wheel(cache: Path, jobs: int, cuda: bool) -> Path:
    """Build the patched mmcv wheel into ``cache`` (written under a temporary name, then renamed)."""
    with tempfile.TemporaryDirectory(prefix="mmcv-build-") as tmp:
        tmp_path = Path(tmp)
        sdist = Path(os.environ["MMCV_SDIST"]) if os.environ.get("MMCV_SDIST") else fetch_sdist(tmp_path)
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp_path, filter="data")
        src = tmp_path / f"mmcv-{MMCV_VERSION}"
        setup_py = src / "setup.py"
        setup_py.write_text(patch_setup(setup_py.read_text()))
        env = dict(os.environ, MMCV_WITH_OPS="1", FORCE_CUDA="1" if cuda else "0", MAX_JOBS=str(jobs))
        out = tmp_path / "dist"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
            env=env, check=True,
        )
        (built,) = out.glob("mmcv-*.whl")
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / (built.name + ".partial")
        shutil.copy2(built, partial)
        os.replace(partial, cache / built.name)
        return cache / built.name


def cached_wheel(cache: Path) -> Path | None:
    """The cached mmcv wheel of this version, if one was built before."""
    found = sorted(cache.glob(f"mmcv-{MMCV_VERSION}-*.whl"))
    return found[-1] if found else None


def extra_requirements(name: str) -> list[str]:
    """The requirements of setup.py's extra ``name`` (read with ``ast``: setup.py is not run)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    extras = next(ast.literal_eval(k.value) for k in call.keywords if k.arg == "extras_require")
    return list(extras[name])


def pip_install(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_cache = os.environ.get("BEV_DDP_WHEEL_CACHE", str(Path.home() / ".cache" / "bev_ddp" / "wheels"))
    parser.add_argument("--cache", type=Path, default=Path(default_cache), help="wheel cache folder")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", "2")), help="compile jobs")
    parser.add_argument("--build-only", action="store_true", help="build (or find) the mmcv wheel, install nothing")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: {args.jobs} is not a positive number of jobs")
    cuda = with_cuda()
    cache = cache_dir(args.cache, cuda)
    wheel = cached_wheel(cache)
    if wheel is None:
        print(f"build_mmdet3d: building mmcv {MMCV_VERSION} ({'CPU+CUDA' if cuda else 'CPU'} ops) into {cache}")
        wheel = build_wheel(cache, args.jobs, cuda)
    else:
        print(f"build_mmdet3d: reusing {wheel}")
    if args.build_only:
        return 0
    pip_install("--no-deps", str(wheel), *OPENMMLAB)
    # the extra's runtime needs, within the project's pins (numpy < 2, torch)
    pip_install("-c", str(ROOT / "requirements.txt"), *extra_requirements("mmdet3d"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
