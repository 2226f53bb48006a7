"""SIGINT and SIGTERM handled the same way by every long-running command.

Two modes share one handler installation:

* :class:`StopRequest` (train, eval, replay): the first signal only sets ``requested``; the loop
  checks it at its next safe point (a step, a batch, a frame; the DDIM sampler also between its
  steps, through :mod:`bev_ddp.stop`), finishes and closes its outputs
  and the command exits ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).  A second signal
  raises :class:`Interrupted` at once (Ctrl-C twice aborts; the outputs are still only complete
  or absent because every file is written to a temporary name and renamed).
* :func:`interruptible` (every command, around its whole run): a signal raises
  :class:`Interrupted` where the program is; the CLI prints one line and exits ``128 + signal``.
* :func:`signals_deferred` (around a write a signal would corrupt, e.g. ``torch.save``, whose C++
  writer turns an exception raised in its Python callback into ``RuntimeError: unexpected pos``):
  a signal arriving inside the block is delivered to the outer handler when the block ends.

Handlers are installed only in the main thread and restored on exit.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Iterator

from bev_ddp.stop import StopRequested, request_stop

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(StopRequested):
    """Raised for SIGINT or SIGTERM where the program is; ``exit_code`` is ``128 + signum``."""


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _raise(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _install(handler: Any) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in SIGNALS}


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block."""
    previous = _install(_raise)
    try:
        yield
    finally:
        _restore(previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM received inside the block take effect (through the handler that was
    installed before it) once the block has finished; the first one is re-raised, later ones dropped."""
    pending: list[int] = []
    previous = _install(lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        _restore(previous)
        if pending:
            signal.raise_signal(pending[0])


class StopRequest:
    """Context manager turning the first SIGINT/SIGTERM into ``requested = True`` (see the module doc).

    Attributes:
        signum: the first signal received (``None`` until one arrives).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """``128 + signum`` once a signal arrived, else 0."""
        return 0 if self.signum is None else 128 + self.signum

    def __enter__(self) -> "StopRequest":
        self._previous = _install(self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second signal: stop now
            raise Interrupted(signum)
        self.signum = signum
        request_stop(signum)  # long loops below the engine (DDIM steps) stop between iterations
        log.warning("%s received: stopping at the next safe point (send it again to stop at once)",
                    signal_name(signum))

    def __exit__(self, *exc: Any) -> None:
        _restore(self._previous)
        self._previous = {}
        request_stop(None)
