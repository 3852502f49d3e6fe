"""Filesystem fault injection for index writes (test-only: patches installed by the test, or by the
subprocess under test, around one write; nothing in the production code knows about it).

Every filesystem step of a commit is counted while a :class:`Faults` is installed: ``os.open`` with
``O_CREAT``, ``open``/``io.open`` for writing and each ``write`` on such a file, ``os.fsync``,
``os.mkdir``, ``os.link``, ``os.rename``, ``os.replace``, ``os.unlink``, and the writes done in C
libraries (``faiss.write_index``; SQLite through ``DocStore.add/delete/copy_to/sync``). Paths outside
``root`` are not counted (``os.fsync`` takes a descriptor and is always counted). The ``fail_at``-th
step raises ``OSError(ENOSPC)`` (a failing ``write`` writes half its data first), or, with
``action="kill"``, the process SIGKILLs itself before doing it; ``sticky`` makes every later step fail
too (a disk that stays full)."""

from __future__ import annotations

import builtins
import errno
import io
import os
import signal

import faiss

from embedkit.stores.docs_sqlite import DocStore

_WRITE_MODES = set("wax+")


class Faults:
    def __init__(self, root, fail_at: int | None = None, *, action: str = "raise", sticky: bool = False):
        self.root = os.path.realpath(str(root))
        self.fail_at, self.action, self.sticky = fail_at, action, sticky
        self.n = 0
        self.hit = None          # (step, name) of the first injected fault
        self.names: list[str] = []

    def under(self, path) -> bool:
        try:
            p = os.path.realpath(os.fsdecode(path))
        except TypeError:
            return False
        return p == self.root or p.startswith(self.root + os.sep)

    def step(self, name: str) -> None:
        self.n += 1
        self.names.append(name)
        if self.fail_at is None or not (self.n == self.fail_at or (self.sticky and self.n > self.fail_at)):
            return
        if self.n > self.fail_at and name.startswith("os.unlink"):
            return  # a full disk still removes files
        if self.hit is None:
            self.hit = (self.n, name)
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, f"No space left on device (injected at step {self.n}: {name})")


class _File:
    """A file opened for writing whose ``write`` calls are steps."""

    def __init__(self, f, faults: Faults, name: str):
        self._f, self._faults, self._name = f, faults, name

    def write(self, data):
        try:
            self._faults.step(f"write {self._name}")
        except OSError:
            self._f.write(data[: len(data) // 2])  # a short write, then the error
            raise
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


def install(faults: Faults, setattr_) -> None:
    """Patch the filesystem layer with ``setattr_(obj, name, value)`` (``monkeypatch.setattr`` in tests,
    :class:`Patcher` elsewhere)."""
    real_open = builtins.open

    def opener(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, bytes, os.PathLike)) and _WRITE_MODES & set(mode) and faults.under(file):
            try:
                faults.step(f"open {os.path.basename(os.fsdecode(file))}")
            except OSError:
                f.close()
                raise
            return _File(f, faults, os.path.basename(os.fsdecode(file)))
        return f

    setattr_(builtins, "open", opener)
    setattr_(io, "open", opener)

    def by_path(name, real, *, nargs=1, when=lambda *a: True):
        def wrapper(*args, **kwargs):
            if any(faults.under(a) for a in args[:nargs]) and when(*args):
                faults.step(f"{name} {os.path.basename(os.fsdecode(args[nargs - 1]))}")
            return real(*args, **kwargs)
        return wrapper

    setattr_(os, "open", by_path("os.open", os.open, when=lambda p, flags, *a: bool(flags & os.O_CREAT)))
    for name, nargs in (("mkdir", 1), ("unlink", 1), ("link", 2), ("rename", 2), ("replace", 2)):
        setattr_(os, name, by_path(f"os.{name}", getattr(os, name), nargs=nargs))
    real_fsync = os.fsync

    def fsync(fd):
        faults.step("os.fsync")
        return real_fsync(fd)

    setattr_(os, "fsync", fsync)
    real_write_index = faiss.write_index

    def write_index(index, path, *a):
        if faults.under(path):
            faults.step(f"faiss.write_index {os.path.basename(path)}")
        return real_write_index(index, path, *a)

    setattr_(faiss, "write_index", write_index)
    for name in ("add", "delete", "copy_to", "sync"):
        real = getattr(DocStore, name)

        def method(self, *a, _real=real, _name=name, **kw):
            faults.step(f"sqlite {_name}")
            return _real(self, *a, **kw)

        setattr_(DocStore, name, method)


class Patcher:
    """``setattr`` that remembers what it replaced (for use outside pytest)."""

    def __init__(self):
        self.saved = []

    def __call__(self, obj, name, value):
        self.saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def undo(self):
        while self.saved:
            obj, name, value = self.saved.pop()
            setattr(obj, name, value)
