"""A one-slot holder for the newest frame, shared by a producer and one worker thread.

The subscription callback only :meth:`LatestSlot.put`s; the worker :meth:`LatestSlot.take`s.
A frame that is replaced before the worker took it is returned by ``put`` so the caller can
count it as dropped: a slow model therefore always works on the newest frame and a backlog
cannot build up anywhere (no rclpy here).
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar('T')


class LatestSlot(Generic[T]):
    """Holds at most one item; a new item replaces the old one."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: T) -> T | None:
        """Store ``item``; return the item it replaced (never taken), or None."""
        with self._cond:
            replaced, self._item = self._item, item
            self._cond.notify()
        return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Wait up to ``timeout`` s for an item and remove it; None on timeout or close."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
        return item

    def close(self) -> None:
        """Wake the waiting worker for shutdown; later ``take`` calls return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed
