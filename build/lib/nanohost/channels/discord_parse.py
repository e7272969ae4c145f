"""Discord ``MESSAGE_CREATE`` payloads → ``InboundMessage``: a pure function, no I/O.

Follows the Discord message object (API v10): snowflake ids are strings and globally unique, so
the message id alone is the ``platform_message_id``; a message without ``guild_id`` is a DM; a
thread is its own channel, so ``chat_id`` is always the ``channel_id`` the message arrived in.
Only facts are reported (mentioned? a reply to the bot? direct?); the router decides. The bot's
own messages and other bots' are dropped here. A payload that does not have the documented shape
is logged with its message and channel id and skipped, never raised: one bad event must not stop
the gateway's receive loop. That holds for errors we did not foresee too: ``parse_message`` logs
any exception and returns None.

``sender`` is the display name (anyone can set it to anything); ``sender_handle`` is the unique
``username``, which allow-lists may match, with ``sender_id``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from nanohost.channels.base import InboundMessage, IncomingFile

log = logging.getLogger(__name__)

CHANNEL = "discord"
USER_MESSAGE_TYPES = frozenset({0, 19})
"""DEFAULT and REPLY; joins, pins, boosts and other system messages are not user text."""

T = TypeVar("T")

Download = Callable[[str, int], Awaitable[bytes]]
"""``download(url, limit)``: fetch an attachment's bytes, raising ``FileTooLarge`` past ``limit``."""


class Malformed(ValueError):
    """The payload lacks a field Discord documents, or has it with the wrong type."""


def parse_message(data: object, bot_id: str, download: Download) -> InboundMessage | None:
    """The ``InboundMessage`` for one MESSAGE_CREATE ``d``, or None (ignored or malformed, logged)."""
    if not isinstance(data, dict):
        log.warning("Discord MESSAGE_CREATE payload is a %s, not an object; skipped", type(data).__name__)
        return None
    where = f"Discord message {data.get('id')!r} in channel {data.get('channel_id')!r}"
    try:
        return _parse(data, bot_id, download, where)
    except Malformed as exc:
        log.warning("%s is malformed (%s); skipped", where, exc)
        return None
    except Exception as exc:  # a payload we did not foresee must not end receiving
        log.warning("%s could not be parsed (%s: %s); skipped", where, type(exc).__name__, exc, exc_info=True)
        return None


def _parse(data: dict[str, Any], bot_id: str, download: Download, where: str) -> InboundMessage | None:
    message_id = _snowflake(data, "id")
    channel_id = _snowflake(data, "channel_id")
    author = _object(data, "author")
    author_id = _snowflake(author, "id")
    kind = data.get("type", 0)
    if author.get("bot") is True or author_id == bot_id:
        log.debug("%s: from a bot; ignored", where)
        return None
    if not isinstance(kind, int) or isinstance(kind, bool) or kind not in USER_MESSAGE_TYPES:
        log.debug("%s: system message type %r; ignored", where, kind)
        return None
    content = _optional(data, "content", str) or ""
    guild_id = _optional(data, "guild_id", str)
    mentions = _users(data.get("mentions"))
    return InboundMessage(
        channel=CHANNEL,
        chat_id=channel_id,
        sender=display_name(author),
        sender_id=author_id,
        sender_handle=_username(author),
        text=readable_mentions(content, mentions),
        platform_message_id=message_id,
        mentions_bot=_mentions(bot_id, content, mentions) or _replies_to(bot_id, data),
        is_direct=guild_id is None,
        files=[_incoming(a, download) for a in _list(data, "attachments")],
    )


def display_name(user: dict[str, Any]) -> str:
    """What people see: the global display name when set, else the user name."""
    name = user.get("global_name")
    if isinstance(name, str) and name:
        return name
    return _username(user)


def _username(user: dict[str, Any]) -> str:
    """The unique user name (``sender_handle``), never the display name anyone can set."""
    username = user.get("username")
    if not isinstance(username, str) or not username:
        raise Malformed("author has no username")
    return username


def readable_mentions(content: str, mentions: list[dict[str, Any]]) -> str:
    """Replace ``<@id>`` / ``<@!id>`` with ``@name`` so the agent reads names, not snowflakes."""
    for user in mentions:
        user_id = user.get("id")
        if not isinstance(user_id, str):
            continue
        try:
            name = display_name(user)
        except Malformed:
            continue
        content = re.sub(rf"<@!?{re.escape(user_id)}>", _literal(f"@{name}"), content)
    return content


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    """A replacement that inserts ``text`` as is: a name holding ``\\1`` or ``\\g<0>`` is not a
    group reference (``re.sub`` would raise, or copy matched text, on a string replacement)."""
    return lambda _match: text


def _mentions(bot_id: str, content: str, mentions: list[dict[str, Any]]) -> bool:
    if any(user.get("id") == bot_id for user in mentions):
        return True
    return re.search(rf"<@!?{re.escape(bot_id)}>", content) is not None


def _replies_to(bot_id: str, data: dict[str, Any]) -> bool:
    """A reply to one of the bot's messages (Discord includes the referenced message)."""
    if not isinstance(data.get("message_reference"), dict):
        return False
    referenced = data.get("referenced_message")
    if not isinstance(referenced, dict):
        return False  # deleted, or not resolved: we cannot tell whose it was
    author = referenced.get("author")
    return isinstance(author, dict) and author.get("id") == bot_id


def _incoming(attachment: object, download: Download) -> IncomingFile:
    if not isinstance(attachment, dict):
        raise Malformed("an attachment is not an object")
    url = _optional(attachment, "url", str)
    filename = _optional(attachment, "filename", str)
    if not url or not filename:
        raise Malformed("an attachment has no url or filename")
    size = attachment.get("size")
    declared = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
    return IncomingFile(name=filename, size=declared, fetch=partial(download, url))


def _users(value: object) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed("mentions is not a list")
    return [user for user in value if isinstance(user, dict)]


def _snowflake(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.isdigit():
        raise Malformed(f"{key} is not a snowflake string")
    return value


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise Malformed(f"{key} is not an object")
    return value


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"{key} is not a list")
    return value


def _optional(data: dict[str, Any], key: str, kind: type[T]) -> T | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise Malformed(f"{key} is not a {kind.__name__}")
    return value
