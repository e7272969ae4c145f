"""Container slots (nanohost/slots.py) with fake holders and a fake clock: FIFO hand-over, the
least recently used idle holder stopped for a waiting wake, never a busy one, and the quantum."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_runner.queues import RunnerQueues
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from nanohost.app import ORCHESTRATOR, build_app
from nanohost.containers.backend import LABEL_GROUP, ContainerSpec, ContainerState
from nanohost.db import AgentSession, Message, make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.groups import create_group
from nanohost.settings import load_settings
from nanohost.slots import Slots


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeHolder:
    """A session as the slots see it: busy (a turn running) or between turns."""

    def __init__(self, name: str, slots: Slots, *, last_used: float = 0.0, busy: bool = False) -> None:
        self.name = name
        self.slots = slots
        self.last_used = last_used
        self.busy = busy
        self.stops: list[str] = []
        self.held_back = False
        self.declines = 0
        """Say no this many times to giving up the slot (a message arrived after the look)."""

    def __repr__(self) -> str:
        return self.name

    async def between_turns(self) -> bool:
        return not self.busy and self.slots.holds(self)

    async def give_up_slot(self, reason: str) -> bool:
        if self.declines:  # a message came after the look: a turn starts, the slot stays
            self.declines -= 1
            self.busy = True
        if self.busy:
            return False
        self.stops.append(reason)
        self.slots.release(self)
        return True

    def hold_back(self) -> None:
        self.held_back = True


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition`` holds; fails (never hangs) when it does not."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def waiting(slots: Slots) -> int:
    return int(slots.stats()["waiting"])


async def test_freed_slots_go_to_the_oldest_waiting_wake() -> None:
    slots = Slots(1)
    first = FakeHolder("first", slots, busy=True)
    await slots.acquire(first)
    granted: list[str] = []

    async def wake(holder: FakeHolder) -> None:
        await slots.acquire(holder)
        granted.append(holder.name)

    queued = [FakeHolder(name, slots, busy=True) for name in ("b", "c", "d")]
    tasks = []
    for holder in queued:
        tasks.append(asyncio.create_task(wake(holder)))
        await until(lambda: waiting(slots) == len(tasks))
    assert granted == []
    for expected, holder in zip(["b", "c", "d"], [first, *queued[:2]], strict=True):
        slots.release(holder)
        await until(lambda: len(granted) == len(tasks) - waiting(slots))
        assert granted[-1] == expected
    await asyncio.gather(*tasks)
    assert granted == ["b", "c", "d"]
    assert first.stops == []  # busy holders are never stopped, whatever waits


async def test_a_newcomer_does_not_jump_the_queue() -> None:
    slots = Slots(1)
    holder, early = FakeHolder("holder", slots, busy=True), FakeHolder("early", slots, busy=True)
    await slots.acquire(holder)
    early_wake = asyncio.create_task(slots.acquire(early))
    await until(lambda: waiting(slots) == 1)
    slots.release(holder)  # handed to `early` at once, before a newcomer can take it
    late = FakeHolder("late", slots, busy=True)
    late_wake = asyncio.create_task(slots.acquire(late))
    await early_wake
    await until(lambda: waiting(slots) == 1)
    assert slots.holds(early) and not slots.holds(late)
    late_wake.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late_wake
    assert waiting(slots) == 0


async def test_a_waiting_wake_stops_the_least_recently_used_idle_holder() -> None:
    slots = Slots(3)
    recent = FakeHolder("recent", slots, last_used=5.0)
    oldest_busy = FakeHolder("oldest-busy", slots, last_used=1.0, busy=True)
    older_idle = FakeHolder("older-idle", slots, last_used=3.0)
    for holder in (recent, oldest_busy, older_idle):
        await slots.acquire(holder)
    newcomer = FakeHolder("newcomer", slots, busy=True)
    await asyncio.wait_for(slots.acquire(newcomer), 5)
    await slots.settled()
    assert older_idle.stops == ["idle, and a wake is waiting for its slot"]
    assert recent.stops == [] and oldest_busy.stops == []  # the busy one is older but mid-turn
    assert slots.holds(newcomer) and not slots.holds(older_idle)
    assert slots.stats()["evicted_idle"] == 1


async def test_busy_holders_are_never_stopped_and_the_first_to_finish_its_turn_makes_room() -> None:
    slots = Slots(2)
    a, b = FakeHolder("a", slots, busy=True), FakeHolder("b", slots, busy=True)
    await slots.acquire(a)
    await slots.acquire(b)
    wake = asyncio.create_task(slots.acquire(FakeHolder("c", slots)))
    await until(lambda: waiting(slots) == 1)
    await slots.rebalance()
    await slots.settled()
    assert a.stops == [] and b.stops == [] and not wake.done()
    b.busy = False  # b's turn ends; its doorbell rings, which nudges the slots
    slots.nudge()
    await asyncio.wait_for(wake, 5)
    assert b.stops and a.stops == []
    assert slots.stats()["waiting"] == 0


async def test_a_holder_that_declines_is_passed_over_for_the_next_idle_one() -> None:
    slots = Slots(2)
    racer = FakeHolder("racer", slots, last_used=1.0)
    racer.declines = 1  # idle at the look, then a message arrived: it keeps its slot
    other = FakeHolder("other", slots, last_used=2.0)
    await slots.acquire(racer)
    await slots.acquire(other)
    await asyncio.wait_for(slots.acquire(FakeHolder("new", slots, busy=True)), 5)
    await slots.settled()
    assert racer.stops == [] and len(other.stops) == 1
    assert slots.holds(racer)


async def test_one_idle_holder_is_stopped_per_waiting_wake_not_more() -> None:
    slots = Slots(3)
    idle = [FakeHolder(f"idle{i}", slots, last_used=float(i)) for i in range(3)]
    for holder in idle:
        await slots.acquire(holder)
    await asyncio.wait_for(slots.acquire(FakeHolder("new", slots, busy=True)), 5)
    await slots.settled()
    assert [len(h.stops) for h in idle] == [1, 0, 0]  # only the least recently used


async def test_quantum_holds_back_a_long_holder_and_stops_it_between_turns() -> None:
    clock = Clock()
    slots = Slots(1, quantum=60.0, clock=clock)
    long = FakeHolder("long", slots, busy=True)
    await slots.acquire(long)
    clock.now = 100.0  # no one waited all this time: nothing happens
    await slots.rebalance()
    assert not long.held_back
    clock.now = 110.0
    wake = asyncio.create_task(slots.acquire(FakeHolder("waiting", slots, busy=True)))
    await until(lambda: waiting(slots) == 1)
    await slots.settled()
    assert long.held_back  # held its slot 110 s ≥ 60 s while a wake waits
    assert long.stops == [] and not wake.done()  # but never stopped mid-turn
    long.busy = False  # its turn ends (nothing new joined it: held back)
    slots.nudge()
    await asyncio.wait_for(wake, 5)
    assert long.stops == ["held its slot over 60 s while wakes waited"]
    assert slots.stats()["quantum_stops"] == 1 and slots.stats()["held_back"] == 0


async def test_quantum_is_not_over_for_a_holder_that_got_its_slot_recently() -> None:
    clock = Clock()
    slots = Slots(2, quantum=60.0, clock=clock)
    old, young = FakeHolder("old", slots, busy=True), FakeHolder("young", slots, busy=True)
    await slots.acquire(old)
    clock.now = 50.0
    await slots.acquire(young)
    clock.now = 70.0  # old: 70 s, young: 20 s
    wakes = [asyncio.create_task(slots.acquire(FakeHolder(f"w{i}", slots, busy=True))) for i in range(2)]
    await until(lambda: waiting(slots) == 2)
    await slots.settled()
    assert old.held_back and not young.held_back
    clock.now = 111.0  # young reaches its quantum too
    await slots.rebalance()
    assert young.held_back
    for wake in wakes:
        wake.cancel()
    await asyncio.gather(*wakes, return_exceptions=True)
    await slots.close()


async def test_a_cancelled_wait_leaves_the_line_and_is_skipped() -> None:
    slots = Slots(1)
    holder = FakeHolder("holder", slots, busy=True)
    await slots.acquire(holder)
    gone = asyncio.create_task(slots.acquire(FakeHolder("gone", slots, busy=True)))
    stays = FakeHolder("stays", slots, busy=True)
    stays_wake = asyncio.create_task(slots.acquire(stays))
    await until(lambda: waiting(slots) == 2)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert waiting(slots) == 1
    slots.release(holder)
    await asyncio.wait_for(stays_wake, 5)
    assert slots.holds(stays) and slots.stats()["in_use"] == 1


async def test_stats_show_the_wake_queue() -> None:
    clock = Clock()
    slots = Slots(1, clock=clock)
    holder = FakeHolder("holder", slots, busy=True)
    await slots.acquire(holder)
    wake = asyncio.create_task(slots.acquire(FakeHolder("w", slots, busy=True)))
    await until(lambda: waiting(slots) == 1)
    clock.now = 12.5
    stats = slots.stats()
    assert (stats["capacity"], stats["in_use"], stats["waiting"], stats["oldest_wait_s"]) == (1, 1, 1, 12.5)
    clock.now = 20.0
    slots.release(holder)
    await wake
    stats = slots.stats()
    assert (stats["waiting"], stats["oldest_wait_s"], stats["longest_wait_s"]) == (0, 0.0, 20.0)
    await slots.close()


# --- the runtime's side, on a fake container engine (the test plays the runner) ---------------


class FakeEngine:
    """A container backend without an engine: records what it is asked, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.running: set[str] = set()
        self._changed = asyncio.Event()

    def _record(self, action: str, container_id: str) -> None:
        self.calls.append((action, container_id.split("#")[0]))
        self._changed.set()

    async def until(self, expected: list[tuple[str, str]]) -> None:
        async with asyncio.timeout(10):
            while self.calls != expected:
                self._changed.clear()
                await self._changed.wait()

    async def run(self, spec: ContainerSpec) -> str:
        container_id = f"{spec.labels[LABEL_GROUP]}#{len(self.calls)}"
        self.running.add(container_id)
        self._record("run", container_id)
        return container_id

    async def stop(self, container_id: str, grace: float = 10) -> None:
        self.running.discard(container_id)
        self._record("stop", container_id)

    async def kill(self, container_id: str) -> None:
        self.running.discard(container_id)
        self._record("kill", container_id)

    async def inspect(self, container_id: str) -> ContainerState | None:
        return ContainerState(container_id, container_id, running=container_id in self.running)

    async def list_managed(self) -> list[ContainerState]:
        return []

    async def logs(self, container_id: str, tail: int = 50) -> str:
        return ""

    async def ping(self) -> bool:
        return True

    async def layer_bytes(self, container_id: str) -> int | None:
        return None

    async def tend(self) -> None:
        pass


async def test_quantum_holds_back_new_messages_then_requeues_the_session_at_the_back(host_env: Path) -> None:
    settings = load_settings(max_containers=1, slot_quantum=0.001, idle_timeout=3600, api_token="t")
    engine_db = make_engine(settings.db_url)
    migrate.upgrade(engine_db)
    with transaction(make_session_factory(engine_db)) as db:
        for name in ("alpha", "beta"):
            create_group(db, settings, name, provider="mock")
    fake = FakeEngine()
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:

        async def send(group: str, text: str) -> int:
            response = await client.post(
                f"/api/groups/{group}/messages", json={"text": text}, headers={"Authorization": "Bearer t"}
            )
            assert response.status == 201
            return int((await response.json())["id"])

        def status_of(message_id: int) -> str:
            with make_session_factory(engine_db)() as db:
                message = db.get(Message, message_id)
                assert message is not None
                return message.status

        orchestrator = client.app[ORCHESTRATOR]
        slots = orchestrator.ctx.slots
        one = await send("alpha", "one")
        await fake.until([("run", "alpha")])
        alpha = next(r for r in orchestrator.runtimes.values() if r.folder == "alpha")
        hi = await send("beta", "hi")
        await until(lambda: waiting(slots) == 1)
        await slots.rebalance()
        await slots.settled()
        assert slots.stats()["held_back"] == 1  # its quantum is over while beta waits ...
        assert fake.calls == [("run", "alpha")]  # ... but it is mid-turn: not stopped

        two = await send("alpha", "two")
        assert status_of(two) == "pending"  # held back: it does not join the running turn
        assert alpha.queues.unconsumed() == [one]

        RunnerQueues(alpha.dir).commit_turn(  # alpha's turn ends, as the runner writes it
            [("message", {"text": "echo: one", "in_reply_to": [one]})], [(one, "done", None)]
        )
        await slots.rebalance()  # (the runner's doorbell does this in the host)
        handover = [("run", "alpha"), ("stop", "alpha"), ("run", "beta")]  # a clean stop, never a kill
        await fake.until(handover)
        await until(lambda: waiting(slots) == 1)  # alpha queues again, at the back
        assert slots.stats()["quantum_stops"] == 1
        assert status_of(two) == "queued" and alpha.queues.unconsumed() == [two]
        assert status_of(one) == "answered"  # its reply was imported as alpha stopped

        beta = next(r for r in orchestrator.runtimes.values() if r.folder == "beta")
        RunnerQueues(beta.dir).commit_turn(
            [("message", {"text": "echo: hi", "in_reply_to": [hi]})], [(hi, "done", None)]
        )
        await slots.rebalance()
        await fake.until([*handover, ("stop", "beta"), ("run", "alpha")])  # beta idle: alpha's turn
        await slots.settled()
        assert alpha.queues.unconsumed() == [two]  # the held-back message reaches the fresh container
    with make_session_factory(engine_db)() as db:
        sessions = list(db.scalars(select(AgentSession)))
        assert [(s.crash_count, s.last_error) for s in sessions] == [(0, None), (0, None)]  # clean stops
    engine_db.dispose()
