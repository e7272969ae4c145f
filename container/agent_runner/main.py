"""The runner loop: inbound rows in, provider events out, replies and acks written together.

One burst at a time: every waiting message goes into one query; messages that arrive while it
runs are pushed into it (the provider steers them into the active turn or queues them for the
next). A turn's reply, its files and the acks of the rows it answered are committed in one
transaction and the host's doorbell is rung at once. Rows a burst did not answer (the provider
crashed) stay unacknowledged and are retried; after ``FAIL_LIMIT`` tries they are acked 'failed'
and the user is told, so nothing is lost silently and nothing blocks the queue forever.

A turn that failed on the way to the model (the host was restarting, a connection was cut, the
model service answered 5xx or 429: ``ResultEvent.retryable``) is not an answer: its rows stay
queued and the whole queue waits out a backoff (``TRANSPORT_BACKOFF``), then tries again. Only
when every retry has failed, or the model itself refused, is the chat told, in plain words
(``agent_runner.codex.errors.plain_words``).

Stopping (SIGTERM, or the host away longer than ``host_away_timeout``): the turn under way is
interrupted, its rows stay queued for the next container, and the runner exits 0 within a few
seconds. A host restart does not stop the container: the next host process adopts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from typing import Any

from agent_runner import phases
from agent_runner.codex.errors import plain_words, scrub
from agent_runner.config import ConfigError, Paths, RunnerConfig
from agent_runner.doorbell import RunnerDoorbell
from agent_runner.items import LiveFeed, TurnLog, archive_turn
from agent_runner.memory import link_skills, scaffold
from agent_runner.provider import (
    ActivityEvent,
    ErrorEvent,
    Event,
    FileEvent,
    InitEvent,
    Input,
    ItemEvent,
    ProgressEvent,
    Provider,
    Query,
    ResultEvent,
    TurnInfoEvent,
)
from agent_runner.queues import InboundRow, RunnerQueues

log = logging.getLogger("agent_runner")

FAIL_LIMIT = 3
STOPPED = "stopped by the user (/stop)"
TRANSPORT_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""Seconds waited before each retry of a turn that failed on transport: 7 attempts over about a
minute of waiting (plus each attempt's own retries inside codex), then the chat is told."""
FALLBACK_POLL = 1.0
HEARTBEAT_EVERY = 5.0
PROGRESS_EVERY = 0.5
ABORT_BUDGET = 2.0
"""Seconds a stop gives the turn under way to be interrupted and recorded; the rest stays queued."""


def parse_row(row: InboundRow) -> tuple[Input | None, str | None]:
    """An inbound row as provider input, or the reason it cannot be one."""
    if row.kind != "message":
        return None, f"unknown inbound kind {row.kind!r}"
    try:
        payload = json.loads(row.payload)
    except ValueError as exc:
        return None, f"payload is not JSON: {exc}"
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        return None, "payload has no text"
    text = payload["text"]
    attachments = payload.get("attachments") or []
    if isinstance(attachments, list):
        for path in attachments:
            text += f"\n(attached file: /workspace/agent/{str(path).lstrip('/')})"
    if not text.strip():
        return None, "empty message"
    return Input(text, (row.id,)), None


def merge(inputs: list[Input]) -> Input:
    """Several waiting messages become one prompt (one turn, one reply)."""
    if len(inputs) == 1:
        return inputs[0]
    return Input("\n\n".join(i.text for i in inputs), tuple(x for i in inputs for x in i.ids))


class Runner:
    """Drives one provider over one session's queues."""

    def __init__(
        self,
        paths: Paths,
        provider: Provider,
        queues: RunnerQueues,
        doorbell: RunnerDoorbell,
        *,
        backoff: tuple[float, ...] = TRANSPORT_BACKOFF,
        host_away_timeout: float | None = None,
    ) -> None:
        self.paths = paths
        self.provider = provider
        self.queues = queues
        self.doorbell = doorbell
        self.backoff = backoff
        self.host_away_timeout = host_away_timeout
        self.host_gone = False
        """Set when the runner stopped because its host stayed away too long."""
        self.attempts: dict[int, int] = {}
        """Bursts that ended with a row unanswered (the provider crashed), per row."""
        self.transport_tries: dict[int, int] = {}
        """Turns that failed on transport, per row."""
        self.retry_at = 0.0
        """No burst starts before this (monotonic) time: a transport backoff is under way."""
        self._last_progress = 0.0
        self.live = LiveFeed(
            self._send_items, lambda delay, flush: asyncio.get_running_loop().call_later(delay, flush)
        )
        """The viewer's live feed: a turn's steps as ``item`` rows (``agent_runner.items``)."""

    def _send_items(self, payloads: list[dict[str, Any]]) -> None:
        try:  # from a timer too: a failure costs the viewer a live update, never the turn
            self.queues.commit_turn([("item", payload) for payload in payloads], [])
        except sqlite3.Error as exc:
            log.warning("could not send the turn's steps to the viewer: %s", exc)
            return
        self.doorbell.ring()

    def touch(self) -> None:
        (self.paths.session / "heartbeat").touch()

    async def run(self, stopping: asyncio.Event) -> None:
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(stopping))
        try:
            while not stopping.is_set():
                rung = self.doorbell.rung.is_set()
                self.doorbell.rung.clear()  # clear before reading, so a ring in between is not lost
                inputs = self._inputs(self.queues.unconsumed(look_back=rung))
                if inputs and (delay := self.retry_at - time.monotonic()) > 0:
                    with contextlib.suppress(TimeoutError):  # the backoff: only a stop cuts it short
                        await asyncio.wait_for(stopping.wait(), delay)
                elif inputs:
                    await self._burst(merge(inputs), stopping)
                else:
                    await self._wait(stopping)
        finally:
            self.live.flush()  # the last steps of a turn cut short, before the queue closes
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, stopping: asyncio.Event) -> None:
        every = HEARTBEAT_EVERY
        if self.host_away_timeout is not None:
            every = min(every, max(self.host_away_timeout / 4, 0.05))
        while not stopping.is_set():
            self.touch()
            away = self.doorbell.away_for()
            if self.host_away_timeout is not None and away > self.host_away_timeout:
                log.warning(
                    "the host has been away for %.0f s (longer than %g s): stopping; "
                    "unanswered messages stay queued for the next container",
                    away,
                    self.host_away_timeout,
                )
                self.host_gone = True
                stopping.set()
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), every)

    async def _wait(self, stopping: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self.doorbell.rung.wait()), asyncio.ensure_future(stopping.wait())]
        await asyncio.wait(waits, timeout=FALLBACK_POLL, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()

    def _inputs(self, rows: list[InboundRow]) -> list[Input]:
        inputs: list[Input] = []
        refused: list[tuple[int, str, str | None]] = []
        for row in rows:
            item, reason = parse_row(row)
            if item is None:
                log.warning("inbound row %s refused: %s", row.id, reason)
                refused.append((row.id, "failed", reason))
            else:
                inputs.append(item)
        if refused:
            self.queues.commit_turn([], refused)
            self.doorbell.ring()
        return inputs

    async def _burst(self, first: Input, stopping: asyncio.Event) -> None:
        query = self.provider.query(first, self.queues.get_state("continuation"))
        burst = _Burst(self, query, first)
        events = aiter(query)
        next_event: asyncio.Future[Event] = asyncio.ensure_future(anext(events))
        rung: asyncio.Future[bool] = asyncio.ensure_future(self.doorbell.rung.wait())
        stop: asyncio.Future[bool] = asyncio.ensure_future(stopping.wait())
        self.doorbell.interrupt.clear()  # a /stop sent before this burst is about nothing in it
        halt: asyncio.Future[bool] = asyncio.ensure_future(self.doorbell.interrupt.wait())
        try:
            while True:
                waits: set[asyncio.Future[Any]] = {next_event, rung, stop, halt}
                done, _ = await asyncio.wait(
                    waits, timeout=FALLBACK_POLL, return_when=asyncio.FIRST_COMPLETED
                )
                if stop.done():
                    await self._abort(query, events, next_event, burst)
                    return
                if halt.done():
                    burst.stopped = True  # a user's /stop: the turn ends, its messages are not retried
                    log.info("interrupting the turn: stopped by the user")
                    halt = asyncio.get_running_loop().create_future()  # once is enough
                    await query.abort(resend=False)  # the thread keeps the stopped turn
                if rung.done() or not done:  # a ring, or the slow poll that makes a lost ring harmless
                    look_back = rung.done()
                    if look_back:
                        self.doorbell.rung.clear()
                        rung = asyncio.ensure_future(self.doorbell.rung.wait())
                    if not burst.deferred:  # a deferred burst takes nothing new: it is winding down
                        new = self.queues.unconsumed(exclude=burst.seen, look_back=look_back)
                        for item in self._inputs(new):
                            burst.push(item)
                if next_event.done():
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        break
                    except Exception as exc:
                        log.exception("provider failed")
                        burst.error(ErrorEvent(f"provider failed: {exc}", kind="crash"))
                        break
                    burst.handle(event)
                    if burst.deferred and not burst.aborted:
                        burst.aborted = True  # what else the query carries waits for the retry too
                        await query.abort()
                    next_event = asyncio.ensure_future(anext(events))
        finally:
            for future in (next_event, rung, stop, halt):
                future.cancel()
        burst.finish()

    async def _abort(
        self, query: Query, events: Any, next_event: asyncio.Future[Event], burst: _Burst
    ) -> None:
        """Stopping mid-turn: interrupt, record what comes back within ``ABORT_BUDGET`` seconds
        (a turn that completes in time is answered), leave the rest queued for the next container."""
        burst.deferred = True  # unanswered rows are not failures: they wait for the next container
        deadline = time.monotonic() + ABORT_BUDGET
        with contextlib.suppress(Exception):
            await asyncio.wait_for(query.abort(), ABORT_BUDGET)
            while (left := deadline - time.monotonic()) > 0:
                event = await asyncio.wait_for(next_event, left)
                burst.handle(event)
                next_event = asyncio.ensure_future(anext(events))
        next_event.cancel()
        burst.finish()

    def progress(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            self.queues.add("progress", {"text": text[-500:]})
            self.doorbell.ring()


class _Burst:
    """Book-keeping of one query: which rows it carries and which it has answered."""

    def __init__(self, runner: Runner, query: Query, first: Input) -> None:
        self.runner = runner
        self.query = query
        self.seen = set(first.ids)
        self.pending = set(first.ids)
        self.prompts = {i: first.text for i in first.ids}
        self.files: list[tuple[str, dict[str, Any]]] = []
        self.thread: str | None = None
        self.last_error: ErrorEvent | None = None
        self.stopped = False
        """A user's /stop interrupted it: what it carried is answered as stopped, not retried."""
        self.deferred = False
        """A turn failed on transport (or the runner is stopping): the rows still pending wait
        for a later burst and are not counted as failed tries."""
        self.aborted = False
        self.turn: TurnLog | None = None
        """The turn under way as the viewer shows it (``agent_runner.items``)."""

    def _turn(self, turn_id: str) -> TurnLog:
        if self.turn is None or self.turn.turn != turn_id:
            self.turn = TurnLog(turn_id)
            self.runner.live.start(
                turn_id, [self.prompts[i] for i in sorted(self.pending) if i in self.prompts]
            )
        return self.turn

    def _archive_turn(self, event: ResultEvent, ids: list[int]) -> list[tuple[str, dict[str, Any]]]:
        """The turn's structured record: a JSON line beside the Markdown; returns the live feed's
        last rows (its end), to be committed with the turn's reply."""
        turn, self.turn = self.turn, None
        if turn is None:
            if event.status != "completed":
                return []
            turn = TurnLog(f"turn-{time.time_ns():x}")
            self.runner.live.start(turn.turn)
        record = turn.record(
            thread=self.thread,
            provider=self.runner.provider.name,
            status=event.status,
            error=event.error,
            prompts=[self.prompts[i] for i in ids if i in self.prompts],
            reply=event.text,
        )
        try:  # first the archive, then the live feed's end: a viewer told it ended finds it there
            archive_turn(self.runner.paths.workspace / "conversations", record)
        except OSError as exc:
            log.warning("could not archive the turn's steps: %s", exc)
        return [("item", row) for row in self.runner.live.end(turn.turn, record)]

    def push(self, item: Input) -> None:
        self.seen.update(item.ids)
        self.pending.update(item.ids)
        self.prompts.update({i: item.text for i in item.ids})
        self.query.push(item)

    def error(self, event: ErrorEvent) -> None:
        self.last_error = event
        self.runner.queues.add(
            "status", {"state": "error", "error": scrub(event.message), "error_kind": event.kind}
        )
        self.runner.doorbell.ring()

    def handle(self, event: Event) -> None:
        runner = self.runner
        runner.touch()
        if isinstance(event, InitEvent):
            self.thread = event.continuation
            runner.queues.set_state("continuation", event.continuation)
            if event.fresh:
                runner.queues.add("status", {"state": "busy", "error": None, "note": "started a new thread"})
        elif isinstance(event, ProgressEvent):
            runner.progress(event.text)
        elif isinstance(event, ActivityEvent):
            pass  # the heartbeat was touched above
        elif isinstance(event, FileEvent):
            self.files.append(("file", {"path": str(event.path), "caption": event.caption}))
        elif isinstance(event, ErrorEvent):
            self.error(event)
        elif isinstance(event, ResultEvent):
            self.result(event)
        elif isinstance(event, ItemEvent):
            turn = self._turn(event.turn)
            if (item := turn.add(event.item)) is not None:
                runner.live.item(event.turn, item)
        elif isinstance(event, TurnInfoEvent):
            turn = self._turn(event.turn)
            turn.model = event.model or turn.model
            turn.usage = event.usage or turn.usage

    def result(self, event: ResultEvent) -> None:
        runner = self.runner
        ids = [i for i in event.ids if i in self.pending]
        steps = self._archive_turn(event, ids)  # the live feed's last rows, first in the commit
        if event.status == "interrupted" and self.stopped:
            self.pending.difference_update(ids)
            runner.queues.commit_turn(steps, [(i, "failed", STOPPED) for i in ids])
            runner.doorbell.ring()
            return
        if (
            event.status == "interrupted"
            or event.status == "failed"
            and event.retryable
            and not event.text.strip()
        ):
            if steps:
                runner.queues.commit_turn(steps, [])
            if event.status == "interrupted":
                return  # not answered: the rows stay queued for the next wake
            self.retry(ids, event)
            return
        rows, self.files = [*steps, *self.files], []
        text = event.text
        if event.status == "failed" and not text.strip():
            text = plain_words(event.kind, event.error)
        if text.strip():
            rows.append(("message", {"text": text, "in_reply_to": ids}))
        status = "done" if event.status == "completed" else "failed"
        runner.queues.commit_turn(rows, [(i, status, event.error) for i in ids])
        runner.doorbell.ring()
        phases.mark("replied")
        phases.flush()
        self.pending.difference_update(ids)
        for i in ids:
            runner.attempts.pop(i, None)
            runner.transport_tries.pop(i, None)
        if event.status == "completed":
            from agent_runner.archive import archive_exchange  # after the reply: off the cold start

            archive_exchange(
                runner.paths.workspace / "conversations",
                provider=runner.provider.name,
                thread=self.thread,
                status=event.status,
                prompts=[self.prompts[i] for i in ids if i in self.prompts],
                reply=event.text,
            )
        if not self.pending:
            self.query.end()

    def retry(self, ids: list[int], event: ResultEvent) -> None:
        """The turn failed on the way to the model: its rows stay queued and the queue waits out
        a backoff; a row whose every retry failed is answered with what went wrong."""
        runner = self.runner
        tries = {i: runner.transport_tries.get(i, 0) + 1 for i in ids}
        runner.transport_tries.update(tries)
        given_up = [i for i in ids if tries[i] > len(runner.backoff)]
        if given_up:
            log.error(
                "rows %s: the model could not be reached after %d tries: %s",
                given_up,
                tries[given_up[0]],
                event.error,
            )
            runner.queues.commit_turn(
                [("message", {"text": plain_words(event.kind, event.error), "in_reply_to": given_up})],
                [(i, "failed", event.error) for i in given_up],
            )
            for i in given_up:
                runner.transport_tries.pop(i, None)
        again = [i for i in ids if i not in given_up]
        if again:
            delay = runner.backoff[max(tries[i] for i in again) - 1]
            runner.retry_at = max(runner.retry_at, time.monotonic() + delay)
            log.warning(
                "rows %s: turn failed on transport (%s); trying again in %g s", again, event.error, delay
            )
            runner.queues.add(
                "progress", {"text": f"The AI model service did not answer; trying again in {delay:g} s."}
            )
        runner.doorbell.ring()
        self.pending.difference_update(ids)
        self.deferred = True

    def finish(self) -> None:
        """The query ended: count a try against every row it left unanswered (unless they wait
        for a retry or the next container)."""
        if self.files:  # files with no result to travel with still reach the chat
            self.runner.queues.commit_turn(self.files, [])
            self.files = []
        if self.deferred:
            self.runner.doorbell.ring()
            return
        if self.stopped:  # rows the stopped query never reached go to the next burst, untried
            return
        given_up = []
        for i in sorted(self.pending):
            tries = self.runner.attempts.get(i, 0) + 1
            self.runner.attempts[i] = tries
            if tries >= FAIL_LIMIT:
                given_up.append(i)
        if given_up:
            reason = self.last_error.message if self.last_error else "the agent stopped without answering"
            text = (
                f"Sorry, the agent failed {FAIL_LIMIT} times on this message ({scrub(reason)}), "
                "so I gave up on it."
            )
            self.runner.queues.commit_turn(
                [("message", {"text": text, "in_reply_to": given_up})],
                [(i, "failed", reason) for i in given_up],
            )
            for i in given_up:
                self.runner.attempts.pop(i, None)
        self.runner.doorbell.ring()


def build_provider(config: RunnerConfig, paths: Paths, base_url: str) -> Provider:
    """The provider runner.json names (``agent_runner.registry``)."""
    from agent_runner.registry import build

    return build(config, paths, base_url)


async def amain(paths: Paths) -> int:
    phases.mark("main")
    queues = RunnerQueues(paths.session)
    doorbell = RunnerDoorbell(paths.session / "doorbell.sock")
    doorbell.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    forward = egress = None
    provider: Provider | None = None
    try:
        config = RunnerConfig.load(paths.session / "runner.json")
        scaffold(paths.workspace)
        link_skills(paths.workspace, paths.codex_home)
        base_url = ""
        if config.gateway_socket:  # the host gives one only to providers that call the model
            from agent_runner.forward import LoopbackForward

            forward = LoopbackForward(config.gateway_socket)
            base_url = f"http://127.0.0.1:{await forward.start()}/v1"
        if config.egress_socket:  # the group may reach allow-listed hosts through the gateway's proxy
            from agent_runner.forward import LoopbackForward

            egress = LoopbackForward(config.egress_socket)
            proxy = f"http://nh:{config.placeholder}@127.0.0.1:{await egress.start()}"
            for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
                os.environ[name] = proxy
            os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
        provider = build_provider(config, paths, base_url)
        phases.mark("configured")
        await provider.start()
        phases.mark("provider_ready")
        runner = Runner(paths, provider, queues, doorbell, host_away_timeout=config.host_away_timeout)
        await runner.run(stopping)
        return 0
    except (ConfigError, OSError, RuntimeError) as exc:
        log.error("runner cannot start: %s", exc)
        queues.add(
            "status", {"state": "error", "error": f"runner cannot start: {exc}", "error_kind": "config"}
        )
        doorbell.ring()
        return 2
    finally:
        if provider is not None:
            await provider.close()
        for listener in (forward, egress):
            if listener is not None:
                await listener.stop()
        await doorbell.stop()
        queues.close()


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("NANOHOST_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sys.exit(asyncio.run(amain(Paths.from_env())))
