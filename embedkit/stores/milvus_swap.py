"""Re-embedding a Milvus-backed index: a new collection, then an alias swap (used by
:mod:`embedkit.index.reembed` through :meth:`MilvusStore.rebuild_session`; no other module needs it).

Names. The manifest's ``index.collection`` is the stable **alias** that clients outside embedkit query;
``index.physical`` is the collection that holds the rows (an index built before aliases records a plain
collection under ``collection`` and no ``physical``). A re-embed builds the new rows into a new
collection at the same URI, ``<alias>__reembed_<pid>__<hex>`` (with a work alias
``<alias>__reembed_<pid>`` while it is built), and leaves the old collection serving.

The switch, in this order:

1. Under the index directory's writer lock, ``CURRENT`` names a generation whose manifest names the new
   collection: the atomic point for every embedkit reader (they follow ``CURRENT`` on their next read).
2. Still under the lock, :meth:`MilvusSwap.switched` drops the work alias and moves the alias to the new
   collection (``alter_alias``, one server-side step): the atomic point for clients that query the alias.
3. :meth:`MilvusSwap.retire`, :data:`RETIRE_GRACE_S` seconds after the switch, drops the old collection:
   no committed state names it any more, and a reader that checked ``CURRENT`` just before the switch
   has finished its call by then (the Milvus counterpart of FAISS' old bases, which stay readable
   through the files a reader holds open). An index from before aliases has a plain collection where
   the alias goes: it is dropped and the alias created in its place at this step.

Milvus Lite (milvus-lite 3.2) and a Milvus server both support aliases (``create_alias``,
``alter_alias``, ``describe_alias``, ``drop_alias``); Lite drops a collection's aliases with it, a server
refuses to drop a collection that still has one, so aliases are always dropped or moved first.

A failed re-embed drops its collection and work alias at once (:meth:`MilvusSwap.discard`); one killed
before the switch leaves them behind, and the next re-embed of that index drops them
(:meth:`MilvusSwap.drop_stale`: collections of processes that are gone). One killed after the switch
leaves the old collection (named by the manifest's ``index.previous_collection``) or an alias not yet
moved: the next re-embed drops the one and moves the other.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from .milvus_client import _msg, check_collection, is_remote

log = logging.getLogger(__name__)

RETIRE_GRACE_S = 2.0   # seconds between the switch and dropping the old collection
TAG = "__reembed_"
PREFIX_MAX = 200       # alias characters kept in a work collection's name (Milvus allows 255)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


class MilvusSwap:
    """One re-embed of the Milvus-backed index whose live store is ``store`` (see the module docstring)."""

    def __init__(self, store):
        desc = store.desc
        self.client = store.client
        self.alias = desc["collection"]
        self.old = store.physical
        self.legacy = not desc.get("physical")  # a plain collection named like the alias
        self.work_alias = check_collection(f"{self.alias[:PREFIX_MAX]}{TAG}{os.getpid()}")
        self._work = re.compile(rf"^{re.escape(self.alias[:PREFIX_MAX] + TAG)}(\d+)__[0-9a-f]{{8}}$")
        uri = store.be.uri
        self.uri = uri if is_remote(uri) else str(Path(uri).expanduser().resolve())
        self.previous = desc.get("previous_collection")
        self.desc = desc
        self.new: str | None = None
        self.switched_at: float | None = None

    # -- before the build ---------------------------------------------------------------------------
    def build_options(self) -> dict:
        """``index`` and ``index_params`` for building the new collection: same type, metric parameters
        and URI as the live one, named after the work alias."""
        params = self.desc.get("params") or {}
        user = dict(params.get("build") or {}, **(params.get("search") or {}))
        return {"index": self.desc.get("type") or "milvus",
                "index_params": dict(user, uri=self.uri, collection=self.work_alias)}

    def drop_stale(self) -> list[str]:
        """Drop what earlier re-embeds left behind (see the module docstring); returns the dropped names."""
        dropped = []
        for name in self._call(self.client.list_collections) or []:
            m = self._work.match(name)
            if m and name != self.old and (int(m.group(1)) == os.getpid() or not _alive(int(m.group(1)))):
                dropped += self._drop(name)
        prev = self.previous  # the collection the last switch replaced (an alias by now if it was a plain one)
        if prev and prev != self.old and self._alias_target(prev) is None and self._exists(prev):
            dropped += self._drop(prev)
        if not self.legacy:
            self._point_alias(self.old)
        return dropped

    # -- after a failure ----------------------------------------------------------------------------
    def discard(self) -> None:
        """Drop this process's work collection and alias (a re-embed that failed before its switch)."""
        for name in self._call(self.client.list_collections) or []:
            m = self._work.match(name)
            if m and int(m.group(1)) == os.getpid() and name != self.old:
                self._drop(name)
        self._drop_alias(self.work_alias)

    # -- the switch ---------------------------------------------------------------------------------
    def manifest_index(self, fresh_store) -> dict:
        """The ``index`` section to commit: the new collection (``fresh_store``'s) under the live index's
        alias and URI."""
        self.new = fresh_store.physical
        return dict(fresh_store.describe(), uri=self.desc["uri"], uri_relative=bool(self.desc.get("uri_relative")),
                    collection=self.alias, physical=self.new, previous_collection=self.old)

    def switched(self) -> None:
        """Right after ``CURRENT`` names the new collection (writer lock held): drop the work alias and move
        the alias to the new collection (an index from before aliases gets its alias in :meth:`retire`)."""
        if self.new is None:
            raise RuntimeError("switched() before manifest_index()")
        self.switched_at = time.monotonic()
        self._drop_alias(self.work_alias)
        if not self.legacy:
            self._point_alias(self.new)

    def retire(self) -> dict:
        """:data:`RETIRE_GRACE_S` after :meth:`switched`: drop the old collection (and, for an index from
        before aliases, create the alias in its place). Best effort: a failure is logged and the next
        re-embed finishes it. Returns what the summary reports."""
        if self.new is None or self.switched_at is None:
            raise RuntimeError("retire() before switched()")
        wait = RETIRE_GRACE_S - (time.monotonic() - self.switched_at)
        if wait > 0:
            time.sleep(wait)
        dropped = self._drop(self.old) if self.old != self.new and self._exists(self.old) else []
        if self.legacy:
            self._point_alias(self.new)
        return {"collection": self.alias, "physical": self.new, "dropped": dropped,
                "alias": self._alias_target()}

    # -- helpers ------------------------------------------------------------------------------------
    def _alias_target(self, alias: str | None = None) -> str | None:
        """The collection ``alias`` names, or None (asked only for a listed alias: pymilvus logs a missing
        one as an RPC error)."""
        alias = alias or self.alias
        if alias not in ((self._call(self.client.list_aliases) or {}).get("aliases") or []):
            return None
        return (self._call(self.client.describe_alias, alias) or {}).get("collection_name")

    def _drop_alias(self, alias: str) -> None:
        if self._alias_target(alias) is not None:
            self._call(self.client.drop_alias, alias)

    def _point_alias(self, physical: str) -> None:
        """Make the alias name ``physical`` (create it, or move it in one step)."""
        target = self._alias_target()
        if target == physical:
            return
        if target is None and self._exists(self.alias):
            log.warning("Milvus alias %r is a collection of its own; it was left as it is", self.alias)
            return
        fn = self.client.create_alias if target is None else self.client.alter_alias
        self._call(fn, physical, self.alias)

    def _exists(self, name: str) -> bool:
        return bool(self._call(self.client.has_collection, name))

    def _drop(self, name: str) -> list[str]:
        """Drop a collection, its aliases first (a Milvus server refuses otherwise); [name] if dropped."""
        listed = self._call(self.client.list_aliases, name) or {}
        for a in listed.get("aliases") or []:
            if a == self.alias:
                log.warning("not dropping Milvus collection %r: the alias %r still names it", name, a)
                return []
            self._call(self.client.drop_alias, a)
        try:
            self.client.drop_collection(name)
        except Exception as e:  # noqa: BLE001 - best effort; the next re-embed retries it
            log.warning("could not drop Milvus collection %r (the next re-embed retries): %s", name, _msg(e))
            return []
        return [name]

    @staticmethod
    def _call(fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - cleanup is best effort; the next re-embed retries it
            log.warning("Milvus %s%r failed: %s", fn.__name__, args, _msg(e))
            return None
