"""The index directory: generations, the ``CURRENT`` pointer, the writer lock, garbage collection.

Layout::

    DIR/CURRENT          name of the live generation ("gen-00000007\\n"), replaced atomically
    DIR/LOCK             flock(2) target: one writer commits at a time, across processes
    DIR/gen-00000007/    one complete, immutable generation: manifest.json + the files it names

A commit prepares ``DIR/.tmp-gen-<pid>-<random>/`` (hard links to the previous generation's files
plus what changed), fsyncs it, renames it to the next ``gen-N`` and switches ``CURRENT``, all under
the lock. A process killed at any point leaves ``CURRENT`` naming a complete generation; the kernel
releases its lock; its temporary directory is removed by the next writer once the process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import IndexFormatError
from ..fsutil import atomic_write_bytes, fsync_dir, make_readable

CURRENT = "CURRENT"
LOCK = "LOCK"
MANIFEST = "manifest.json"
GEN = re.compile(r"^gen-(\d{8})$")
TMP = re.compile(r"^\.tmp-gen-(\d+)-")


def current_generation(directory: Path) -> Path:
    directory = Path(directory)
    if not directory.exists():
        raise IndexFormatError(f"index directory {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise IndexFormatError(f"index path {str(directory)!r} is not a directory")
    cur = directory / CURRENT
    if not cur.is_file():
        raise IndexFormatError(f"{str(directory)!r} is not a complete embedkit index (no {CURRENT} file; "
                               "an interrupted first build leaves this state — build it again)")
    for _ in range(100):
        name = _current_name(cur)
        if GEN.match(name) and (directory / name).is_dir():
            return directory / name
        if not GEN.match(name) or _current_name(cur) == name:
            break  # still naming it: really missing (a writer committed since otherwise: read again)
    raise IndexFormatError(f"{cur} names generation {name!r}, which is missing or invalid")


def _current_name(cur: Path) -> str:
    try:
        return cur.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return ""


def moved_on(directory: Path, gen: Path) -> bool:
    """Whether ``CURRENT`` names another generation than ``gen`` now (a writer committed since it was read;
    compared by name: ``CURRENT``'s stat can repeat within the file system's timestamp granularity)."""
    return _current_name(Path(directory) / CURRENT) != gen.name


def current_key(directory: Path):
    """A cheap fingerprint of ``CURRENT`` (changes whenever another process commits): its stat and the
    generation it names (a stat alone can repeat: inode numbers are reused and two commits can fall
    within one timestamp tick)."""
    cur = Path(directory) / CURRENT
    try:
        st = os.stat(cur)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size, _current_name(cur))


@contextlib.contextmanager
def writer_lock(directory: Path, *, shared: bool = False):
    """Hold the index directory's exclusive writer lock (released by the kernel if we die); ``shared``:
    hold it shared, as writes to a server-backed store do (they exclude a switch, not each other)."""
    path = Path(directory) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY) if shared else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:  # (shared, read-only open) an index whose LOCK was never created
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def new_tmp(directory: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-gen-{os.getpid()}-", dir=directory))
    make_readable(tmp, directory=True)
    return tmp


def link_files(src: Path, dst: Path, skip=(MANIFEST,)) -> None:
    """Hard-link every file of generation ``src`` (sub-folders too) into ``dst`` (O(1) per file; never
    copied). Files are immutable once committed: a writer replaces a linked file by unlinking it first."""
    for p in src.iterdir():
        if p.name in skip or (dst / p.name).exists():
            continue
        if p.is_dir():
            (dst / p.name).mkdir()
            link_files(p, dst / p.name, skip=())
        elif p.is_file():
            os.link(p, dst / p.name)


def _next_number(directory: Path) -> int:
    nums = [int(m.group(1)) for p in directory.iterdir() if (m := GEN.match(p.name))]
    return max(nums, default=0) + 1


def publish(directory: Path, tmp: Path) -> Path:
    """Rename a finished temporary generation into place and switch CURRENT to it (caller holds the lock)."""
    for p in tmp.rglob("*"):
        if p.is_file() and p.stat().st_nlink == 1:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(tmp)
    final = directory / f"gen-{_next_number(directory):08d}"
    os.rename(tmp, final)
    fsync_dir(directory)
    atomic_write_bytes(directory / CURRENT, (final.name + "\n").encode())
    collect_garbage(directory, final)
    return final


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def collect_garbage(directory: Path, live: Path, *, own_tmp: bool = False) -> None:
    """Remove generations other than ``live``, temporary directories of dead processes (or, with
    ``own_tmp``, this process's abandoned ones) and a dead writer's temporary ``CURRENT``. The caller
    holds the writer lock. Readers that loaded an older generation keep their
    open files: removing a directory entry never disturbs an open file."""
    for p in directory.iterdir():
        if p == live:
            continue
        if GEN.match(p.name):
            shutil.rmtree(p, ignore_errors=True)
        elif (m := TMP.match(p.name)) and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
        elif own_tmp and m and int(m.group(1)) == os.getpid():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(f".{CURRENT}.") and p.name.endswith(".tmp"):
            # a writer killed while switching CURRENT (only a lock holder writes one, and we hold the lock)
            with contextlib.suppress(OSError):
                p.unlink()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
