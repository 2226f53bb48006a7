"""Makes ``convert_helpers`` (next to this file) importable from every test module under tests/convert."""
from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
