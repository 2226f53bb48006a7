"""Fixtures of the mmdet3d front-end tests: a tiny synthetic world with bev_ddp and mmdet3d info files.

(This folder is not named ``mmdet3d``: on the test path that name would shadow the package.)
The tests need the ``mmdet3d`` extra (``make mmdet3d``); without it every test here is skipped.
"""
from __future__ import annotations


import pytest

pytest.importorskip("mmdet3d", reason="the mmdet3d extra is not installed (make mmdet3d)")



@pytest.fixture(scope="session")
def mmdet3d_world(tmp_path_factory) -> Path:
    """Tiny synthetic world (2 scenes × 3 keyframes) with ``infos/bev_ddp_infos_*.json`` and
    ``infos/mmdet3d_infos_*.pkl`` (``bev-ddp prepare --to-mmdet3d``)."""
    from bev_ddp.cli import main
    from bev_ddp.data.synthetic import tiny_world

    root = tiny_world(tmp_path_factory.mktemp("mmdet3d_world"))
    assert main(["prepare", "--dataroot", str(root), "--version", "v1.0-mini", "--to-mmdet3d"]) == 0
    return root


@pytest.fixture(scope="session")
def registered():
    """mmdet3d's modules and ours in its registries (what ``custom_imports`` does in a config)."""
    from mmdet3d.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    import bev_ddp.integrations.mmdet3d  # noqa: F401

    return True
