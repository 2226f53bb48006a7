"""The process-wide "stop at the next safe point" flag, readable by loops at every layer.

:class:`bev_ddp.engine.interrupt.StopRequest` sets it on the first SIGINT / SIGTERM and clears it
on exit.  Loops below the engine that can run for a long time inside one safe-point interval (the
DDIM sampler's steps: ``eval --steps 1000000`` is one batch) call :func:`raise_if_stop_requested`
between iterations; the :class:`StopRequested` they raise ends the batch, and the engine's loop
(evaluation, replay) treats it as the stop it asked for.  Outside a ``StopRequest`` the flag is
never set, so the check costs one global read.
"""
from __future__ import annotations

import signal

_requested: int | None = None  # the signal number of the pending stop request


class StopRequested(KeyboardInterrupt):
    """A loop stopped early because a stop was requested (``signum``); ``exit_code`` = 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def request_stop(signum: int | None) -> None:
    """Set (a signal number) or clear (``None``) the pending stop request."""
    global _requested
    _requested = None if signum is None else int(signum)


def raise_if_stop_requested() -> None:
    """Raise :class:`StopRequested` when a stop is pending (call between iterations of a long loop)."""
    if _requested is not None:
        raise StopRequested(_requested)
