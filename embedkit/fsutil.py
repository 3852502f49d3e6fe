"""Crash-safe file writes: write a temporary file beside the target, fsync, then rename over it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a mkstemp/mkdtemp path the permissions a normally created file or directory would have."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file and rename it to ``path`` only if it succeeds."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_npz(path: str | os.PathLike, **arrays) -> None:
    import numpy as np

    atomic_write(path, lambda f: np.savez(f, **arrays))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path`` for a tool that writes files by name (FAISS, ONNX);
    it is renamed to ``path`` if the block succeeds and removed if it fails."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        make_readable(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/embedkit/<parts>`` (default ``~/.cache/embedkit/<parts>``): where embedkit keeps
    what it derives on this machine (exported graphs, measured runtime choices). Not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "embedkit", *parts)


def read_json(path: str | os.PathLike, what: str):
    """Parse a JSON file that embedkit wrote; a missing or damaged file is an IndexFormatError."""
    from .errors import IndexFormatError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{what} {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{what} {path} is corrupt: {e}") from None
