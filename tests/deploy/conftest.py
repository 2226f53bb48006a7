"""Makes the BEV test helpers (tests/bev/bev_test_helpers.py) importable from tests/deploy."""
from __future__ import annotations

import sys
from pathlib import Path

_BEV = str(Path(__file__).resolve().parents[1] / "bev")
if _BEV not in sys.path:
    sys.path.insert(0, _BEV)
