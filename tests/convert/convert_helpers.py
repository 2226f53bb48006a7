"""Shared helpers of the converter tests: manifests and random checkpoints with their keys."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "configs" / "bev" / "reference"
# the reference manifests: $BEV_DDP_MANIFESTS, else shared/ inside or beside the checkout
_CANDIDATES = [Path(os.environ["BEV_DDP_MANIFESTS"])] if os.environ.get("BEV_DDP_MANIFESTS") else []
_CANDIDATES += [ROOT / "shared" / "reference" / "manifests", ROOT.parent / "shared" / "reference" / "manifests"]
MANIFESTS = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[-1])


def manifest(name: str) -> dict:
    path = MANIFESTS / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"reference manifest {path} not available")
    return json.loads(path.read_text())


def random_checkpoint(keys: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly ``keys``' names and shapes (integer BN counters and indices)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.randint(0, 1000, tuple(shape), generator=gen)
        elif key.endswith("relative_position_index"):
            out[key] = torch.randint(0, 169, tuple(shape), generator=gen)
        elif key.endswith("running_var"):
            out[key] = torch.rand(tuple(shape), generator=gen) + 0.5
        else:
            out[key] = torch.randn(tuple(shape), generator=gen)
    return out
