"""The one writer of files: whole files through a temporary file and a rename, records appended
whole lines at a time. A failure is one UserError line naming the path and the cause, and it
leaves the previous file as it was (no partial file, no partial line).
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cnn_train.errors import UserError, first_line

TEMPORARY_SUFFIX = ".tmp"  # `.<name>.<pid>.<random>.tmp`: checkpoint.remove_stale_temporaries
MAX_NAME_BYTES = 255


def temporary_path(path: Path) -> Path:
    """A fresh hidden name beside `path` (same folder, so the rename is atomic)."""
    tail = f".{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMPORARY_SUFFIX}"
    room = MAX_NAME_BYTES - len(tail) - 1
    name = path.name.encode()[:room].decode(errors="ignore")
    return path.with_name(f".{name}{tail}")


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return first_line(error, type(error).__name__)


def _failure(path: Path, what: str, error: BaseException, previous: str) -> UserError:
    return UserError(
        f"could not write {what} {path}: {_reason(error)}; free disk space or fix permissions "
        f"({previous})"
    )


def _file_in_the_way(folder: Path) -> Path:
    """The nearest existing ancestor of `folder` (a file where a folder should be)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs folders; the data is synced
        _fsync_path(folder)


def _commit(temporary: Path, path: Path, replace: bool) -> None:
    """Rename `temporary` to `path`; with `replace=False` never over an entry that exists."""
    if replace:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails with EEXIST instead of replacing: no race
    except FileExistsError:
        raise
    except OSError as error:  # a file system without hard links
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from error
        os.replace(temporary, path)


@contextlib.contextmanager
def _temporary_beside(path: Path, what: str) -> Iterator[Path]:
    temporary = temporary_path(path)
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as error:
            blocker = _file_in_the_way(path.parent)
            raise UserError(
                f"could not write {what} {path}: {blocker} is a file, not a folder; move it or "
                "choose another path (nothing was written)"
            ) from error
        except OSError as error:
            raise _failure(path, what, error, "nothing was written") from error
        yield temporary
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def write_through_temporary(
    path: str | Path,
    write_to: Callable[[Path], None],
    *,
    check: Callable[[Path], None] | None = None,
    replace: bool = True,
    what: str = "file",
) -> None:
    """Write `path` with a writer that takes a file name (torch.jit, ONNX, safetensors).

    `write_to` writes a temporary file beside `path`; `check`, if given, reads it back and may
    raise (nothing is renamed then); the file is synced and renamed onto `path`. With
    `replace=False` an entry that appeared at `path` meanwhile is never replaced.
    """
    path = Path(path)
    previous = f"the previous {what} is intact"
    with _temporary_beside(path, what) as temporary:
        try:
            write_to(temporary)
            _fsync_path(temporary)
        except (OSError, RuntimeError) as error:  # torch reports a full disk as RuntimeError
            raise _failure(path, what, error, previous) from error
        if check is not None:
            check(temporary)
        try:
            _commit(temporary, path, replace)
        except FileExistsError as error:
            raise UserError(
                f"{path} appeared while it was being written; nothing was replaced"
            ) from error
        except OSError as error:
            raise _failure(path, what, error, previous) from error
        _fsync_folder(path.parent)


def write_atomically(
    path: str | Path, write_fn: Callable[[BinaryIO], None], *, what: str = "file"
) -> None:
    """Write `path` through `write_fn(handle)` on a temporary file, fsync and a rename.

    `path` is never partial: a failure (disk full, no permission, a crash) leaves the previous
    `path` as it was and raises one UserError line naming the path and the cause.
    """

    def write_to(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            write_fn(handle)
            handle.flush()

    write_through_temporary(path, write_to, what=what)


def write_bytes_atomically(path: str | Path, data: bytes, *, what: str = "file") -> None:
    """Write `data` to `path` atomically (see `write_atomically`)."""
    write_atomically(path, lambda handle: handle.write(data), what=what)


def write_text_atomically(path: str | Path, text: str, *, what: str = "file") -> None:
    """Write `text` (UTF-8) to `path` atomically (see `write_atomically`)."""
    write_bytes_atomically(path, text.encode(), what=what)


def append_line(path: str | Path, text: str) -> None:
    """Append `text` and a newline to `path` as one whole line, synced to disk.

    A failed append (disk full) is one UserError line, and the file is cut back to where it
    was: a partial line is never left. A partial last line found there (a process killed
    mid-write before) is ended first, so the new record stays a line of its own.
    """
    if "\n" in text or "\r" in text:
        raise ValueError("append_line takes one line without line breaks")
    path = Path(path)
    data = (text + "\n").encode()
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
        raise UserError(f"could not append to {path}: {_reason(error)}") from error
    try:
        start = os.fstat(descriptor).st_size
        if start and _last_byte(path, start) != b"\n":
            data = b"\n" + data
        _write_all(descriptor, data, path, start)
    finally:
        os.close(descriptor)


def _last_byte(path: Path, size: int) -> bytes:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return os.pread(descriptor, 1, size - 1)
    finally:
        os.close(descriptor)


def _write_all(descriptor: int, data: bytes, path: Path, start: int) -> None:
    written = 0
    try:
        while written < len(data):
            written += os.write(descriptor, data[written:])
        os.fsync(descriptor)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, start)  # no partial line: back to the last whole record
        raise UserError(
            f"could not append to {path}: {_reason(error)}; free disk space (the records "
            "before are intact)"
        ) from error
