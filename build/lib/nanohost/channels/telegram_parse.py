"""Telegram ``Update`` objects to host terms: a pure function, no network, no state.

Follows the Bot API's ``Message`` shape (https://core.telegram.org/bots/api#message):

- ``chat.type`` ``private`` is a direct chat; ``group``/``supergroup`` are groups (negative ids).
- Text is ``text``, or ``caption`` on a document/photo; the matching entity list is ``entities``
  or ``caption_entities``. Entity ``offset``/``length`` count UTF-16 code units, not Python
  characters, so an emoji before an @-mention shifts it by two; slicing is done in UTF-16.
- The bot is addressed by a ``mention`` entity ``@botname``, a ``text_mention`` entity for the
  bot's user id (users without a user name), a ``bot_command`` ``/cmd@botname``, or a reply to
  one of the bot's own messages.
- A group upgraded to a supergroup gets a new id: the old chat receives a service message with
  ``migrate_to_chat_id`` (the new one, one with ``migrate_from_chat_id``); both become a
  ``ChatMove`` so the binding follows the chat.
- Forum topics (``is_topic_message``) carry ``message_thread_id``: that is the thread replies
  go to.
- The sender is ``from``: ``sender`` is the display name (first and last name, which anyone can
  set to anything), ``sender_id`` the user id and ``sender_handle`` the ``username`` (unique,
  absent for users who have none): allow-lists match only those two.

Anything malformed (wrong types, missing chat) is logged with its ``update_id`` and gives None;
an exception never leaves ``parse_update``, because one odd update must not stop the poller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from nanohost.channels.base import InboundMessage, IncomingFile

log = logging.getLogger(__name__)

CHANNEL = "telegram"

FileFetch = Callable[[str, int], Awaitable[bytes]]
"""Downloads a Telegram ``file_id`` with a byte limit (the adapter's ``getFile`` + download)."""

ANONYMOUS_ADMIN_ID = 1087968824
"""``GroupAnonymousBot``: the ``from`` of messages an anonymous group admin sends."""


@dataclass(frozen=True)
class BotIdentity:
    """Who the bot is (from ``getMe``): needed to spot mentions of it and its own messages."""

    id: int
    username: str


@dataclass(frozen=True)
class ChatMove:
    """A chat got a new id (group upgraded to a supergroup)."""

    old_chat_id: str
    new_chat_id: str


class Malformed(ValueError):
    """The update does not have the shape the Bot API documents."""


def update_id_of(update: object) -> int | None:
    """The update's ``update_id`` (what the poll offset advances past), or None if it has none."""
    if isinstance(update, dict):
        value = update.get("update_id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def parse_update(update: object, bot: BotIdentity, fetch: FileFetch) -> InboundMessage | ChatMove | None:
    """Turn one update into a message for the router, a chat move, or None (ignored, logged)."""
    uid = update_id_of(update)
    try:
        return _parse(update, bot, fetch)
    except Malformed as exc:
        log.warning("telegram update %s is malformed (%s); skipped", uid, exc)
    except Exception:  # a shape we did not foresee: never let it out of the parser
        log.exception("telegram update %s could not be parsed; skipped", uid)
    return None


def _parse(update: object, bot: BotIdentity, fetch: FileFetch) -> InboundMessage | ChatMove | None:
    if not isinstance(update, dict):
        raise Malformed("not an object")
    uid = update_id_of(update)
    if "message" not in update:
        kinds = sorted(k for k in update if k != "update_id")
        log.debug("telegram update %s is not a new message (%s); skipped", uid, ", ".join(kinds))
        return None
    message = _obj(update["message"], "message")
    chat = _obj(message.get("chat"), "message.chat")
    chat_id = str(_int(chat.get("id"), "message.chat.id"))
    chat_type = _str(chat.get("type"), "message.chat.type")
    message_id = _int(message.get("message_id"), "message.message_id")
    move = _chat_move(message, chat_id)
    if move is not None:
        return move
    sender = _sender(message, chat, bot)
    if sender is None:
        log.debug("telegram update %s: message from a bot or from no one; skipped", uid)
        return None
    text, entities = _text_and_entities(message)
    files = _files(message, fetch)
    if not text and not files:
        log.debug("telegram update %s: nothing to pass on (sticker, service message…); skipped", uid)
        return None
    return InboundMessage(
        channel=CHANNEL,
        chat_id=chat_id,
        sender=sender.name,
        sender_id=sender.id,
        sender_handle=sender.handle,
        text=text,
        platform_message_id=f"{chat_id}:{message_id}",
        thread_id=_thread_id(message),
        mentions_bot=_addresses_bot(text, entities, bot) or _replies_to_bot(message, bot),
        is_direct=chat_type == "private",
        files=files,
    )


# --- typed access ----------------------------------------------------------------------------


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object")
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Malformed(f"{what} is not an integer")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{what} is not a string")
    return value


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# --- pieces of a message ---------------------------------------------------------------------


def _chat_move(message: dict[str, Any], chat_id: str) -> ChatMove | None:
    """The service message of a group-to-supergroup upgrade, seen from either chat."""
    to = _opt_int(message.get("migrate_to_chat_id"))
    if to is not None:
        return ChatMove(chat_id, str(to))
    came_from = _opt_int(message.get("migrate_from_chat_id"))
    if came_from is not None:
        return ChatMove(str(came_from), chat_id)
    return None


@dataclass(frozen=True)
class _Sender:
    name: str
    """Display name: shown to the agent, never trusted."""
    id: str
    handle: str | None
    """The unique ``username``, None when the user has none."""


def _sender(message: dict[str, Any], chat: dict[str, Any], bot: BotIdentity) -> _Sender | None:
    """Who sent the message, or None for bots, the bot itself and nobody.

    An anonymous group admin posts "as the group": ``from`` is ``GroupAnonymousBot`` (a bot!) and
    ``sender_chat`` is the group itself, so the group stands in as the sender (with no handle:
    a group's public name is not a person's).
    """
    sender_chat = message.get("sender_chat")
    if isinstance(sender_chat, dict) and sender_chat.get("id") == chat.get("id"):
        title = _opt_str(sender_chat.get("title")) or "group admin"
        return _Sender(title, str(_int(sender_chat.get("id"), "message.sender_chat.id")), None)
    user = message.get("from")
    if user is None:
        return None
    user = _obj(user, "message.from")
    user_id = _int(user.get("id"), "message.from.id")
    if user_id == bot.id or user.get("is_bot") is True:
        return None
    handle = _opt_str(user.get("username"))
    names = [n for n in (_opt_str(user.get("first_name")), _opt_str(user.get("last_name"))) if n]
    display = " ".join(names) or handle or str(user_id)
    return _Sender(display, str(user_id), handle)


def _text_and_entities(message: dict[str, Any]) -> tuple[str, list[Any]]:
    """The message text (or a file's caption) with the entity list that indexes into it."""
    for text_key, entities_key in (("text", "entities"), ("caption", "caption_entities")):
        text = message.get(text_key)
        if text is not None:
            entities = message.get(entities_key)
            return _str(text, f"message.{text_key}"), entities if isinstance(entities, list) else []
    return "", []


def _thread_id(message: dict[str, Any]) -> str | None:
    """A forum topic's id; plain reply chains are not threads replies should go to."""
    if message.get("is_topic_message") is not True:
        return None
    topic = _opt_int(message.get("message_thread_id"))
    return str(topic) if topic is not None else None


def utf16_slice(text: str, offset: int, length: int) -> str:
    """``text[offset:offset+length]`` counted in UTF-16 code units, as Telegram's entities are."""
    encoded = text.encode("utf-16-le")
    return encoded[2 * offset : 2 * (offset + length)].decode("utf-16-le", errors="replace")


def _addresses_bot(text: str, entities: list[Any], bot: BotIdentity) -> bool:
    """True when an entity @-mentions the bot or is a ``/command@botname``."""
    handle = "@" + bot.username.lower()
    for entity in entities:
        if not isinstance(entity, dict):
            continue
        kind = entity.get("type")
        if kind == "text_mention":
            user = entity.get("user")
            if isinstance(user, dict) and user.get("id") == bot.id:
                return True
            continue
        offset, length = _opt_int(entity.get("offset")), _opt_int(entity.get("length"))
        if offset is None or length is None or offset < 0 or length <= 0:
            continue
        span = utf16_slice(text, offset, length).lower()
        if kind == "mention" and span == handle:
            return True
        if kind == "bot_command" and "@" in span and span[span.index("@") :] == handle:
            return True
    return False


def _replies_to_bot(message: dict[str, Any], bot: BotIdentity) -> bool:
    replied = message.get("reply_to_message")
    if not isinstance(replied, dict):
        return False
    author = replied.get("from")
    return isinstance(author, dict) and author.get("id") == bot.id


# --- files -----------------------------------------------------------------------------------


def _files(message: dict[str, Any], fetch: FileFetch) -> list[IncomingFile]:
    """Attachments the router may download: documents, photos (largest size), audio, video, voice."""
    files: list[IncomingFile] = []
    for key, fallback in (("document", "document"), ("audio", "audio"), ("video", "video.mp4")):
        media = message.get(key)
        if media is not None:
            files.append(_incoming(_obj(media, f"message.{key}"), fallback, fetch, use_name=True))
    voice = message.get("voice")
    if voice is not None:
        files.append(_incoming(_obj(voice, "message.voice"), "voice.ogg", fetch, use_name=False))
    photo = message.get("photo")
    if photo is not None:
        files.append(_largest_photo(photo, fetch))
    return files


def _incoming(media: dict[str, Any], fallback: str, fetch: FileFetch, *, use_name: bool) -> IncomingFile:
    file_id = _str(media.get("file_id"), "file_id")
    unique = _opt_str(media.get("file_unique_id")) or file_id[-12:]
    name = _opt_str(media.get("file_name")) if use_name else None
    if name is None:
        stem, dot, ext = fallback.partition(".")
        name = f"{stem}-{unique}{dot}{ext}"
    return IncomingFile(name=name, size=_opt_int(media.get("file_size")), fetch=partial(fetch, file_id))


def _largest_photo(sizes: object, fetch: FileFetch) -> IncomingFile:
    """Telegram sends each photo in several sizes, smallest first; the largest is the original."""
    if not isinstance(sizes, list) or not sizes or not all(isinstance(s, dict) for s in sizes):
        raise Malformed("message.photo is not a list of sizes")

    def area(size: dict[str, Any]) -> tuple[int, int]:
        width, height = _opt_int(size.get("width")) or 0, _opt_int(size.get("height")) or 0
        return width * height, _opt_int(size.get("file_size")) or 0

    best = max(sizes, key=area)
    unique = _opt_str(best.get("file_unique_id")) or _str(best.get("file_id"), "file_id")[-12:]
    return _incoming({**best, "file_name": f"photo-{unique}.jpg"}, "photo.jpg", fetch, use_name=True)
