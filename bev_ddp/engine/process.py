"""Per-process helpers of the training loop: seeding and turning Ctrl-C into a clean stop."""
from __future__ import annotations

import logging
import random
import signal
import threading
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def derived_seed(*parts: int) -> int:
    """A 32-bit seed mixed from several integers (e.g. base seed, rank, stream id)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint32)[0])


class StopRequest:
    """Context manager turning the first SIGINT/SIGTERM into ``requested = True``.

    The training loop checks the flag at step boundaries; a second signal gets the previous
    handler (Ctrl-C twice aborts at once).  Handlers are only installed in the main thread.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        log.warning("signal %d received: saving a checkpoint at the end of this step", signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
