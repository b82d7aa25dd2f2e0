"""CallSlots: the budget of calls in flight, shared by awaiting coroutines and queued connections, FIFO."""

from __future__ import annotations

import asyncio

import pytest

from icws_fast.gateway.slots import CallSlots


async def test_waiters_of_both_kinds_get_slots_in_their_order() -> None:
    slots = CallSlots(1)
    order: list[str] = []
    await slots.take()  # the one slot is held

    def start(name: str) -> bool:
        order.append(name)
        return True

    async def coroutine(name: str) -> None:
        await slots.take()
        order.append(name)

    slots.start_or_queue(lambda: start("a"))
    task = asyncio.ensure_future(coroutine("b"))
    await asyncio.sleep(0)
    slots.start_or_queue(lambda: start("c"))
    assert order == []
    for expected in (["a"], ["a", "b"], ["a", "b", "c"]):
        slots.give()
        await asyncio.sleep(0)
        assert order == expected
    await task
    slots.give()
    slots.start_or_queue(lambda: start("d"))  # a slot is free again: started at once
    assert order[-1] == "d"


async def test_a_connection_that_no_longer_wants_its_slot_passes_it_on() -> None:
    slots = CallSlots(1)
    started: list[str] = []
    slots.start_or_queue(lambda: False)  # a free slot, declined: still free
    slots.start_or_queue(lambda: started.append("held") is None)
    slots.start_or_queue(lambda: False)  # gone while waiting
    slots.start_or_queue(lambda: started.append("next") is None)
    slots.give()
    assert started == ["held", "next"]


async def test_a_cancelled_waiter_neither_keeps_nor_loses_a_slot() -> None:
    slots = CallSlots(1)
    await slots.take()
    waiting = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    slots.give()
    await asyncio.wait_for(slots.take(), 1)  # the slot came back, not to the cancelled waiter

    # Handed the slot in the same step as it is cancelled: the slot goes on to the next waiter.
    handed = asyncio.ensure_future(slots.take())
    after = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    slots.give()
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    await asyncio.wait_for(after, 1)
