"""Group commit of a session's inbound appends: many messages, one ``inbound.db`` transaction.

Appending to ``inbound.db`` is a synchronous SQLite commit (rollback journal, full sync: a few
fsyncs, ~1-5 ms on a busy disk). One commit per message, on the event loop, capped the router at
~110 messages/s and stalled every other group meanwhile (``python -m bench router``). Here each
``add`` joins the batch being collected; the batch is written in one transaction in a worker
thread, then ``after(ids)`` runs on the event loop (the runtime marks the rows queued in one
host-database transaction); a failed write is handed to ``failed(ids, error)``. That is for chat
platforms (``add(..., wait=False)``): nobody waits there for an answer to a full disk. The HTTP
API and the web chat (``wait=True``) write their row at once, on the event loop, and raise what
the write raised, so a full disk still reaches that sender (507) and nothing is assumed queued
that is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nanohost.transport import SessionQueues

Item = tuple[int, str, str | None, list[str]]


class GroupCommit:
    def __init__(
        self,
        queues: SessionQueues,
        after: Callable[[list[int]], None],
        failed: Callable[[list[int], BaseException], None],
    ) -> None:
        self.queues = queues
        self.after = after
        self.failed = failed
        self._batch: list[tuple[Item, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, item: Item, *, wait: bool = True) -> None:
        """``wait``: write ``item`` now and return once it is committed (a sender waits for its
        answer: no thread hop, which costs more latency than the commit on a busy machine).
        Otherwise queue it with whatever else arrives meanwhile and return at once."""
        if wait:
            self.queues.append_many([item])
            self.after([item[0]])
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())
        done.add_done_callback(lambda f: self._unwaited(item[0], f))

    async def settled(self) -> None:
        """Return once every row added so far is written (or its write failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer})

    def _unwaited(self, message_id: int, done: asyncio.Future[None]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            self.failed([message_id], error)

    async def _write(self) -> None:
        while self._batch:
            batch, self._batch = self._batch, []
            try:
                await asyncio.to_thread(self.queues.append_many, [item for item, _ in batch])
                self.after([item[0] for item, _ in batch])
            except BaseException as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
