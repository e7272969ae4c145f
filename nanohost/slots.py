"""Container slots: at most ``capacity`` containers run; wakes beyond that wait their turn.

The rule (README "Container slots" says the same):

1. A wake that finds every slot taken waits in a first-in, first-out queue. A freed slot goes to
   the oldest waiting wake, never to a newcomer that jumps the queue.
2. While wakes wait, the least recently used *idle* holder (a running container between turns:
   no turn running, no unanswered message) is stopped cleanly at once, one per waiting wake. This
   is checked when a wake starts waiting, whenever a holder's container reports (a turn ending
   rings its doorbell), and every ``RECHECK`` seconds while anyone waits. A holder in the middle
   of a turn is never stopped for another group.
3. Quantum: while wakes still wait, a holder that has held its slot for ``quantum`` seconds is
   *held back*: new messages for it wait in the database instead of joining its running turn,
   so its turn ends; it is then stopped cleanly between turns, and its session, if messages
   wait, queues again at the back. So with more busy groups than slots every waiting wake gets a
   slot within about ``quantum`` plus one turn (a turn is bounded by the turn timeout).

A holder is anything with the small ``SlotHolder`` surface below (the host's is
``SessionRuntime``); the tests use fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

RECHECK = 2.0
"""Seconds between re-checks of the holders while wakes wait (a lost doorbell costs at most this)."""


class SlotHolder(Protocol):
    """What the slots need from whoever holds one."""

    @property
    def last_used(self) -> float:
        """Monotonic time of its last activity (a message in, output from its container)."""
        ...

    async def between_turns(self) -> bool:
        """True when its container runs with no turn running and no unanswered message."""
        ...

    async def give_up_slot(self, reason: str) -> bool:
        """Stop cleanly if still between turns (the stop releases the slot); False if it did not."""
        ...

    def hold_back(self) -> None:
        """Its quantum is over: keep new messages out of its container so its turn can end."""
        ...


@dataclass
class _Waiter:
    holder: SlotHolder
    since: float
    granted: asyncio.Future[None]


class Slots:
    """The host's container slots (one instance, in ``HostContext.slots``)."""

    def __init__(
        self, capacity: int, *, quantum: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.quantum = quantum
        self._clock = clock
        self._held: dict[SlotHolder, float] = {}
        """Holder → when it got its slot."""
        self._waiters: deque[_Waiter] = deque()
        self._evicting: set[SlotHolder] = set()
        self._held_back: set[SlotHolder] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rebalancing: asyncio.Task[None] | None = None
        self._again = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.longest_wait = 0.0
        self.evicted_idle = 0
        self.quantum_stops = 0

    # --- taking and giving back ------------------------------------------------------------

    def holds(self, holder: SlotHolder) -> bool:
        return holder in self._held

    async def acquire(self, holder: SlotHolder) -> None:
        """Take a slot for ``holder``; when all are taken, wait in line (and make room: see the rule)."""
        if holder in self._held:
            return
        if len(self._held) < self.capacity and not self._waiters:
            self._held[holder] = self._clock()
            return
        waiter = _Waiter(holder, self._clock(), asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self.nudge()
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self.release(holder)  # granted just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, holder: SlotHolder) -> None:
        """Give the slot back; the oldest waiting wake gets it at once."""
        if self._held.pop(holder, None) is None:
            return
        self._held_back.discard(holder)
        while self._waiters and len(self._held) < self.capacity:
            waiter = self._waiters.popleft()
            if waiter.granted.done():  # its wake was cancelled
                continue
            now = self._clock()
            self.longest_wait = max(self.longest_wait, now - waiter.since)
            self._held[waiter.holder] = now
            waiter.granted.set_result(None)

    # --- making room -----------------------------------------------------------------------

    def nudge(self) -> None:
        """Something may have changed (a turn ended, a wake started waiting): look again soon.
        Cheap when nobody waits."""
        if self._closed or (not self._waiters and not self._held_back):
            return
        if self._rebalancing is None or self._rebalancing.done():
            self._rebalancing = asyncio.get_running_loop().create_task(self._rebalance_loop())
        else:
            self._again = True

    async def rebalance(self) -> None:
        """Apply rules 2 and 3 once (``nudge`` runs this in the background)."""
        for holder in [h for h in self._held_back if h in self._held and h not in self._evicting]:
            if await self._between_turns(holder):  # rule 3: its turn ended
                self._evict(
                    holder, f"held its slot over {self.quantum:.0f} s while wakes waited", quantum=True
                )
        waiting = sum(1 for w in self._waiters if not w.granted.done())
        need = waiting - len(self._evicting)
        for holder in sorted(self._held, key=lambda h: h.last_used):  # rule 2: LRU idle first
            if need <= 0:
                break
            if holder not in self._held or holder in self._evicting or holder in self._held_back:
                continue
            if await self._between_turns(holder):
                self._evict(holder, "idle, and a wake is waiting for its slot", quantum=False)
                need -= 1
        now = self._clock()
        need -= len(self._held_back - self._evicting)  # each will free its slot when its turn ends
        for holder, since in sorted(self._held.items(), key=lambda item: item[1]):  # rule 3, oldest first
            if need <= 0:
                break
            if holder not in self._evicting and holder not in self._held_back and now - since >= self.quantum:
                self._held_back.add(holder)
                holder.hold_back()
                need -= 1

    async def _rebalance_loop(self) -> None:
        while True:
            self._again = False
            try:
                await self.rebalance()
            except Exception:
                log.exception("slots: making room failed; trying again in %s s", RECHECK)
            if not self._again:
                self._schedule_recheck(self._clock())
                return

    async def _between_turns(self, holder: SlotHolder) -> bool:
        try:
            return await holder.between_turns()
        except Exception as exc:  # an unreadable queue is the runtime's business, not a free slot
            log.debug("slots: cannot tell whether %s is between turns: %s", holder, exc)
            return False

    def _evict(self, holder: SlotHolder, reason: str, *, quantum: bool) -> None:
        self._evicting.add(holder)
        task = asyncio.get_running_loop().create_task(self._give_up(holder, reason, quantum))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_up(self, holder: SlotHolder, reason: str, quantum: bool) -> None:
        try:
            if await holder.give_up_slot(reason):
                if quantum:
                    self.quantum_stops += 1
                else:
                    self.evicted_idle += 1
        except Exception:
            log.exception("slots: stopping %s to free its slot failed", holder)
        finally:
            self._evicting.discard(holder)
            self.nudge()  # it may have said no (a message came): look for another

    def _schedule_recheck(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed or (not self._waiters and not self._held_back):
            return
        due = [since + self.quantum - now for h, since in self._held.items() if h not in self._held_back]
        delay = min([RECHECK, *(d for d in due if d > 0)])
        self._timer = asyncio.get_running_loop().call_later(delay, self.nudge)

    async def settled(self) -> None:
        """Wait until no look for room and no eviction it started is under way."""
        while (self._rebalancing is not None and not self._rebalancing.done()) or self._tasks:
            running = [*self._tasks, *([self._rebalancing] if self._rebalancing else [])]
            await asyncio.gather(*running, return_exceptions=True)

    async def close(self) -> None:
        """Stop looking (the host is shutting down); evictions under way finish."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._rebalancing is not None:
            self._rebalancing.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._rebalancing is not None:
            await asyncio.gather(self._rebalancing, return_exceptions=True)

    # --- what /healthz shows ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The wake queue: slots in use, wakes waiting and the oldest wait, and what made room."""
        now = self._clock()
        waits = [now - w.since for w in self._waiters if not w.granted.done()]
        return {
            "capacity": self.capacity,
            "in_use": len(self._held),
            "waiting": len(waits),
            "oldest_wait_s": round(max(waits, default=0.0), 1),
            "longest_wait_s": round(max([self.longest_wait, *waits]), 1),
            "evicted_idle": self.evicted_idle,
            "quantum_stops": self.quantum_stops,
            "held_back": len(self._held_back),
        }
