"""The gateway's budget of calls to the IC in flight at once, shared by relays and ``ws_close`` calls."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable


class CallSlots:
    """At most ``limit`` calls at once; the others wait their turn, first come, first served.

    Two kinds of waiter share one queue. A coroutine awaits :meth:`take`, which costs it a parked task and a
    future. A connection whose envelopes wait to be relayed, and which has no task yet, queues a callback with
    :meth:`start_or_queue` instead: one queue entry. When thousands of sessions open at once nearly all of
    them wait here, and a task per waiting session (its coroutines, a future) was about 1.5 KiB each, left
    behind as half-empty allocator pages once the burst is over.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: collections.deque[asyncio.Future[None] | Callable[[], bool]] = collections.deque()

    def start_or_queue(self, start: Callable[[], bool]) -> None:
        """Call ``start`` holding a slot: now if one is free, else when one is given back to it.

        ``start`` takes the slot over (and must :meth:`give` it back when its call is done) and returns True,
        or returns False when it no longer needs it (its connection went away meanwhile): the slot goes on.
        """
        if self._free > 0 and not self._waiters:
            self._free -= 1
            if not start():
                self.give()
        else:
            self._waiters.append(start)

    async def take(self) -> None:
        """Wait for a slot; :meth:`give` it back when the call is done."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as the caller was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Return a slot: to the first waiter that still wants it, else to the free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_result(None)
                    return
            elif waiter():
                return
        self._free += 1
