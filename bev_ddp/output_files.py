"""Output files that are complete or absent: temporary name + rename, folder probes, stale temporaries.

Every file a command writes goes through :func:`atomic_path` (or the ``write_*_atomic``
helpers): the data goes to ``.<name>.<random>.tmp`` in the same folder, is flushed to disk and
renamed onto the final name.  A crash, a signal or a full disk (ENOSPC) mid-write leaves the
previous complete file (or none) and removes the temporary.  :func:`probe_output_dir` creates an
output folder and checks, before any work, that a file can be written there and that the disk
has room; :func:`remove_stale_tmp` deletes the temporaries a killed process (SIGKILL) left.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from bev_ddp.errors import OutputError

TMP_SUFFIX = ".tmp"
MIN_FREE_BYTES = 1 << 20  # 1 MiB: below this, no command can finish its outputs


def _new_tmp(path: Path) -> Path:
    """A new empty file beside ``path`` with a unique temporary name and the mode a plain ``open``
    would give (0o666 less the umask; ``tempfile.mkstemp`` would make every output 0o600)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{TMP_SUFFIX}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    ``fsync=False`` skips the flush to disk (still atomic for crashes of the process, not of the
    machine) for bulk data that is cheap to regenerate.

    Use the yielded path for writers that take a file name (``savefig``, ``np.savez``)::

        with atomic_path(out / "maps.png") as tmp:
            fig.savefig(tmp, format="png")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_tmp(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a full disk names the output, not nothing
        raise


class _NothingWritten(Exception):
    pass


def write_via_tmp(path: str | os.PathLike, write: Callable[[Path], Path | None]) -> Path | None:
    """Call ``write(tmp)`` and rename ``tmp`` onto ``path`` (see :func:`atomic_path`); ``None`` and
    no file when ``write`` returns ``None`` (it had nothing to write, e.g. a figure without data)."""
    try:
        with atomic_path(path) as tmp:
            if write(tmp) is None:
                raise _NothingWritten
    except _NothingWritten:
        return None
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file (see :func:`atomic_path`)."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` through a temporary file (see :func:`atomic_path`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def probe_output_dir(path: str | os.PathLike, *, what: str = "output folder",
                     min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Create ``path`` and check that a file can be written in it and that the disk has room.

    Raises:
        OutputError: one line naming ``path`` (a file in the way, a read-only or full disk, no
            permission), so a command fails before its work instead of after it.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise OutputError(f"{what} {path} cannot be created: a file is in the way ({blocker})") from None
    except OSError as exc:
        raise OutputError(f"{what} {path} cannot be created: {exc.strerror or exc}") from exc
    if not path.is_dir():
        raise OutputError(f"{what} {path} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".probe.", suffix=TMP_SUFFIX, dir=path)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        raise OutputError(f"{what} {path} is not writable: {exc.strerror or exc}") from exc
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise OutputError(
            f"{what} {path} has {free / 2**20:.1f} MiB free, at least {min_free_bytes / 2**20:.1f} MiB are needed"
        )
    return path


def remove_stale_tmp(folder: str | os.PathLike, pattern: str = f".*{TMP_SUFFIX}*") -> list[Path]:
    """Delete temporaries (``pattern``) a killed earlier run left in ``folder``; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(pattern):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
