"""The rich console every command prints its tables with.

rich's own :class:`rich.console.Console` handles a closed stdout (``bev-ddp report ... | head -n 1``)
itself: it exits with status 1 before the CLI sees anything.  :class:`Console` raises
:class:`BrokenPipeError` instead, so the CLI's one error boundary (:func:`bev_ddp.cli.run_guarded`)
ends the command with 141, as for any other write to a closed stdout.
"""
from __future__ import annotations

import errno

from rich import console as rich_console


class Console(rich_console.Console):
    """:class:`rich.console.Console` whose closed stdout raises :class:`BrokenPipeError`."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # print nothing more through this console
        raise BrokenPipeError(errno.EPIPE, "stdout was closed early")
