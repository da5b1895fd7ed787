"""In-memory cache of API keys for the hot API routes, emptied whenever credentials change.

A cached key saves the two reads (key, user) that every API request made; once a
submission read the key's owner with their subscription, the entry keeps that row too
(a submission then reads nothing). It must never outlive a revocation, so the cache
listens to the app's ORM sessions: any flush or statement that writes the ``api_keys``,
``users`` or ``subscriptions`` table marks the session, and when that session commits
the whole cache is dropped (revoking a key, "revoke all", a password change or reset, a
ban, an account deletion, a plan bought, changed or ended; rare events, so dropping
everything is cheaper than knowing what to drop). The owner's volunteer credit, which
results add to without an ORM session, is as old as :data:`TTL_S` at most. A lookup that began
before the drop is not stored (the generation moved on), so a read of the old rows
cannot put a revoked key back. Changes made by another process are seen within
:data:`TTL_S` (the admin CLI), or at once (another replica: its note drops this cache).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from coordinator.store import models

TTL_S = 5.0
MAX_ENTRIES = 100_000  # beyond it the oldest half goes (a key id costs ~200 bytes here)
# A key's entry also keeps its owner's row with the subscription (for submissions: the
# tier comes from it), so a change to any of the three drops the cache.
_WATCHED = frozenset(
    {models.ApiKey.__tablename__, models.User.__tablename__, models.Subscription.__tablename__}
)
_MARK = "credentials_changed"


@dataclass(frozen=True)
class CachedKey:
    key_hash: str
    user_id: int
    is_admin: bool
    last_used_at: float | None
    loaded_at: float
    # The owner's row with its subscription as one read gave it (api_reads._OWNER), once
    # a submission read it: plain column values, never an ORM object shared by requests.
    owner: Any = None


class KeyCache:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self.generation = 0
        self._entries: dict[str, CachedKey] = {}
        self._changed: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_id: str, now: float) -> CachedKey | None:
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        if not 0 <= now - entry.loaded_at < self.ttl_s:
            del self._entries[key_id]
            return None
        return entry

    def put(self, key_id: str, entry: CachedKey, generation: int) -> None:
        """Store what a lookup that began at ``generation`` found (nothing if it is stale)."""
        if generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            for old in list(self._entries)[: MAX_ENTRIES // 2]:
                del self._entries[old]
        self._entries[key_id] = entry

    def touched(self, key_id: str, entry: CachedKey, last_used_at: float) -> None:
        if self._entries.get(key_id) is entry:
            self._entries[key_id] = dataclasses.replace(entry, last_used_at=last_used_at)

    def owned(self, key_id: str, entry: CachedKey, owner: Any, generation: int) -> None:
        """Keep ``owner`` (its row, read after ``entry`` at ``generation``) with the entry,
        unless the cache changed meanwhile (dropped, or the entry replaced)."""
        if generation == self.generation and self._entries.get(key_id) is entry:
            self._entries[key_id] = dataclasses.replace(entry, owner=owner)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after a watched session committed a credential change (replica
        mode: the other replicas drop their caches too)."""
        self._changed.append(callback)

    def watch(self, session_class: type[Session]) -> None:
        """Drop everything when a session of ``session_class`` commits a credential change."""

        def flushed(session: Session, _ctx: UOWTransaction, _instances: Any) -> None:
            changed = (*session.new, *session.dirty, *session.deleted)
            watched = models.ApiKey | models.User | models.Subscription
            if any(isinstance(obj, watched) for obj in changed):
                session.info[_MARK] = True

        def executed(state: ORMExecuteState) -> None:
            if state.is_insert or state.is_update or state.is_delete:
                table = getattr(state.statement, "table", None)
                if getattr(table, "name", None) in _WATCHED:
                    state.session.info[_MARK] = True

        def committed(session: Session) -> None:
            if session.info.pop(_MARK, False):
                self.clear()
                for callback in self._changed:
                    callback()

        def rolled_back(session: Session) -> None:
            session.info.pop(_MARK, None)

        event.listen(session_class, "before_flush", flushed)
        event.listen(session_class, "do_orm_execute", executed)
        event.listen(session_class, "after_commit", committed)
        event.listen(session_class, "after_rollback", rolled_back)
