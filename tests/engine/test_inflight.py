"""InFlight: what a shutdown waits for, what it cancels, and when it returns."""

from __future__ import annotations

import asyncio

from koalabot.engine.inflight import InFlight

GRACE = 5.0  # long enough never to run out in a test that expects work to finish


async def test_work_that_ends_within_the_grace_period_finishes() -> None:
    inflight = InFlight()
    done = asyncio.Event()

    async def answer() -> str:
        await asyncio.sleep(0.05)
        done.set()
        return "answered"

    task = asyncio.create_task(answer())
    inflight.add(task)
    assert len(inflight) == 1
    assert await inflight.finish(GRACE) == 0
    assert done.is_set() and task.result() == "answered"
    assert len(inflight) == 0


async def test_work_past_the_grace_period_is_cancelled_and_over_when_finish_returns() -> None:
    inflight = InFlight()
    ended = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.set()

    task = asyncio.create_task(stuck())
    inflight.add(task)
    await asyncio.sleep(0)  # let it start
    assert await inflight.finish(0.05) == 1
    assert task.cancelled() and ended.is_set()


async def test_work_started_while_waiting_is_waited_for() -> None:
    inflight = InFlight()
    second_done = asyncio.Event()

    async def second() -> None:
        await asyncio.sleep(0.05)
        second_done.set()

    async def first() -> None:
        await asyncio.sleep(0.02)
        inflight.add(asyncio.create_task(second()))  # e.g. a listener handing on an answer

    inflight.add(asyncio.create_task(first()))
    assert await inflight.wait(GRACE)
    assert second_done.is_set()


async def test_a_tracked_block_counts_only_while_it_runs() -> None:
    inflight = InFlight()
    inside, leave = asyncio.Event(), asyncio.Event()

    async def listener() -> None:
        with inflight.track(), inflight.track():  # nested: still counted until the outer ends
            inside.set()
            await leave.wait()
        await asyncio.sleep(60)  # after the block: no longer work in flight

    task = asyncio.create_task(listener())
    await inside.wait()
    assert len(inflight) == 1
    assert not await inflight.wait(0.05)  # the block is still running
    leave.set()
    assert await inflight.wait(GRACE)
    assert not task.done()
    task.cancel()


async def test_a_tracked_task_that_shuts_down_does_not_wait_for_itself() -> None:
    inflight = InFlight()

    async def stop_from_a_listener() -> int:
        with inflight.track():
            return await inflight.finish(GRACE)

    assert await asyncio.wait_for(stop_from_a_listener(), timeout=1) == 0
