"""Build and install bev_ddp.

The compiled ops live in the top-level ``ops/`` folder (see ``ops/README.md``).  ``get_extensions``
always builds the CPU extension ``bev_ddp._ops_cpu`` and adds the CUDA extension
``bev_ddp._ops_cuda`` when a CUDA toolkit and a CUDA build of torch are present
(``FORCE_CUDA=1`` forces it, ``BEV_DDP_NO_EXT=1`` skips every extension).
Install with ``pip install --no-build-isolation -e .`` after ``pip install -r requirements.txt``
so the extensions compile against the installed torch.
"""
from __future__ import annotations

import os
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def get_extensions():
    """Return the extension modules to build (empty when torch is not importable)."""
    if os.environ.get("BEV_DDP_NO_EXT") == "1":
        return [], {}
    try:
        from ops.build import get_extensions as _get  # defined next to the C++/CUDA sources
    except ImportError:
        return [], {}
    return _get(ROOT)


ext_modules, cmdclass = get_extensions()

setup(
    name="bev_ddp",
    version="0.1.0",
    description="BEVFusion with a diffusion map decoder (DDP) for BEV map segmentation, "
    "image segmentation and monocular depth",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bev_ddp", "bev_ddp.*"]),
    package_data={"bev_ddp": ["py.typed"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0",
        "nuscenes-devkit>=1.1.11",
        "numpy",
        "shapely>=2.0",
        "scipy>=1.10",
        "rosbags>=0.10",
        "mcap>=1.6",
        "mcap-ros2-support>=0.5",
        "mcap-protobuf-support>=0.6",
        "foxglove-schemas-protobuf>=0.4",
        "protobuf>=4.25",
        "pyquaternion>=0.9.9",
        "opencv-python-headless>=4.8",
        "omegaconf>=2.3",
        "tqdm>=4.66",
        "rich>=13",
        "matplotlib>=3.7",
        "pillow>=10",
        "pyyaml>=6",
        "tensorboard>=2.15",
    ],
    extras_require={
        # spconv's CPU wheel races with >1 thread; the CUDA-card wheel runs right on the CPU too.
        "lidar": ["spconv-cu120>=2.3.6"],
        "test": ["pytest>=8", "scikit-learn>=1.3"],
        # bev-ddp export, --backend onnxruntime (docs/deploy.md); ml_dtypes < 0.6 keeps numpy < 2
        "deploy": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18", "ml_dtypes<0.6"],
        # bev_ddp.integrations.mmdet3d: the runtime needs of mmengine / mmdet / mmdet3d.  mmcv 2.1.0 (built
        # from source), mmengine, mmdet, mmdet3d and lyft_dataset_sdk themselves are installed without
        # their declared dependencies by `make mmdet3d` (tools/build_mmdet3d.py, OPENMMLAB): those would
        # pull opencv-python beside opencv-python-headless and open3d, which nothing here uses.
        "mmdet3d": ["addict", "yapf", "termcolor", "terminaltables", "six", "numba", "plyfile", "scikit-image",
                    "trimesh", "pandas", "pycocotools", "networkx>=2.5"],
    },
    entry_points={"console_scripts": ["bev-ddp=bev_ddp.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
