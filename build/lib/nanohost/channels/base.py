"""The one interface every chat platform adapter implements, and the errors it raises.

A channel adapter is thin: it turns platform events into ``InboundMessage``s and hands them to
the router, and it sends text, files and a typing signal when delivery asks. Everything that is
the same on every platform (bindings, allow-lists, engage modes, de-duplication, attachments,
splitting long replies, retries) lives once in the router and in delivery, not in adapters.

Failures are classified where they happen, because only the adapter can read the platform's
answer: ``TransientError`` (429, 5xx, a dropped connection: retry later, quietly) or
``PermanentError`` (403 kicked, 400 chat not found: stop, record it, tell the operator).
A token the platform refuses at start is a ``ChannelStartError``: that channel stays off, the
others keep running.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol


class ChannelError(Exception):
    """A platform call failed."""


class TransientError(ChannelError):
    """Worth retrying: rate limited (``retry_after`` seconds, when the platform says), 5xx, network."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ChannelError):
    """Retrying cannot help (bot kicked, chat gone, message refused): record it once, move on."""


class ChannelStartError(Exception):
    """The platform refused the credentials: the channel stays off; the message says what to fix.

    A platform that cannot be reached at start (network down, 5xx) is a ``TransientError``
    instead, and the host retries the start with backoff.
    """


class FileTooLarge(ChannelError):
    """An attachment is over the size cap (raised by ``IncomingFile.fetch``)."""


@dataclass(frozen=True)
class IncomingFile:
    """A file a user attached, not yet downloaded: the router decides whether to fetch it.

    ``name`` is the platform's file name and is untrusted; ``size`` is what the platform declared
    (None when it does not say). ``fetch(limit)`` downloads at most ``limit`` bytes and raises
    ``FileTooLarge`` beyond that, so a lying ``size`` cannot fill the disk.
    """

    name: str
    size: int | None
    fetch: Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True)
class InboundMessage:
    """A message from any channel, in the host's terms.

    ``platform_message_id`` must be unique within the channel (adapters prefix per-chat ids with
    the chat id); it is what de-duplication keys on. ``attachments`` are paths relative to the
    group folder (``inbox/report.pdf``), filled in by the router once ``files`` are saved.
    """

    channel: str
    chat_id: str
    sender: str | None
    text: str
    attachments: list[str] = field(default_factory=list)
    platform_message_id: str | None = None
    sender_id: str | None = None
    """The platform's stable user id; allow-lists match it or ``sender_handle``."""
    sender_handle: str | None = None
    """The sender's unique user name on the platform (Telegram ``username``, Discord ``username``),
    never a display name, which anyone can set to anything; allow-lists may match it."""
    thread_id: str | None = None
    """Where replies go inside the chat (Slack thread ts); None for the chat itself."""
    mentions_bot: bool = False
    """The bot was @-mentioned, or the message replies to one of the bot's messages."""
    is_direct: bool = False
    """A one-to-one chat with the bot: every message is addressed to it."""
    files: list[IncomingFile] = field(default_factory=list)


@dataclass(frozen=True)
class ChatTarget:
    """Where an outbound message goes."""

    chat_id: str
    thread_id: str | None = None


class ChannelSink(Protocol):
    """What an adapter reports to (the router)."""

    async def receive(self, message: InboundMessage) -> None:
        """Route one inbound message. Never raises for a message it ignores or refuses."""

    async def chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        """The platform gave a chat a new id (Telegram supergroup migration): move its binding."""


class ChannelAdapter(ABC):
    """A chat platform. Subclasses set ``name`` (the channel name in bindings) and the limits."""

    name: ClassVar[str]
    text_limit: ClassVar[int]
    """Characters one message may carry on this platform."""
    caption_limit: ClassVar[int]
    """Characters a file's caption may carry; longer text is sent as its own message first."""
    typing_interval: ClassVar[float | None] = None
    """Seconds a typing signal lasts (re-sent while a turn runs); None: the platform has none."""

    def broken(self) -> str | None:
        """Why the channel stopped receiving for good after a successful start (a token revoked
        while running), or None while it works; shown in ``/healthz``."""
        return None

    def measure(self, text: str) -> int:
        """A text's length as the platform counts it against ``text_limit`` and ``caption_limit``."""
        return len(text)

    @abstractmethod
    async def start(self, sink: ChannelSink) -> None:
        """Check the credentials (raise ``ChannelStartError`` when refused) and start receiving.

        Returns once receiving has started; the receive loop runs in the background, survives
        dropped connections and malformed payloads (logged with the platform's ids, skipped),
        and calls ``sink.receive`` for each message, in the order the platform sent them.
        """

    @abstractmethod
    async def stop(self) -> None:
        """Stop receiving and close connections."""

    @abstractmethod
    async def send_text(self, target: ChatTarget, text: str) -> str | None:
        """Send one message of at most ``text_limit`` characters; returns the platform's id."""

    @abstractmethod
    async def send_file(self, target: ChatTarget, path: Path, caption: str) -> str | None:
        """Send a file (images as images where the platform distinguishes) with its caption."""

    async def typing(self, target: ChatTarget) -> None:  # noqa: B027 - optional for platforms without one
        """Show that the agent is working (no-op where the platform has no such signal)."""
