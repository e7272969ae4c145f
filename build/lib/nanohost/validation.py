"""Checks on operator and platform input, each with a message that says what to do instead.

One place for the rules, so the CLI, the HTTP API and the host refuse the same things the same way.
"""

from __future__ import annotations

import re

MAX_NAME = 64
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME_RE = re.compile(r"(_KEY|_TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
RESERVED_FOLDERS = frozenset({"templates"})
CHANNELS = ("web", "api", "telegram", "slack", "discord")


class InvalidInput(ValueError):
    """Input refused; the message is shown to the operator as is."""


def check_name(value: str, what: str = "group name") -> str:
    """Group names and folder names: short, no path tricks, safe in URLs and on any filesystem."""
    if not value:
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidInput(f"{what} {value!r} is longer than {MAX_NAME} characters")
    if "/" in value or "\\" in value:
        raise InvalidInput(f"{what} {value!r} must not contain a path separator")
    if ".." in value:
        raise InvalidInput(f"{what} {value!r} must not contain '..'")
    if value.startswith("."):
        raise InvalidInput(f"{what} {value!r} must not start with a dot")
    if not _NAME_RE.match(value):
        raise InvalidInput(
            f"{what} {value!r} may only use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return value


def check_folder(value: str) -> str:
    """A group folder name (a single directory under the groups dir)."""
    check_name(value, "folder name")
    if value.lower() in RESERVED_FOLDERS:
        raise InvalidInput(f"folder name {value!r} is reserved; choose another")
    return value


def check_env_name(name: str) -> str:
    """Environment names for a group's container; anything that looks like a credential is refused.

    Credentials never enter a container: the gateway injects the model key, and other secrets
    belong in MCP servers on the host side.
    """
    if not _ENV_NAME_RE.match(name):
        raise InvalidInput(f"env name {name!r} must be letters, digits and '_' and not start with a digit")
    if _SECRET_NAME_RE.search(name):
        raise InvalidInput(
            f"env name {name!r} looks like a credential; credentials never enter a container "
            "(the gateway injects the model key)"
        )
    return name


def check_single_line(value: str, what: str) -> str:
    """Values written into config files must be one line."""
    if "\n" in value or "\r" in value or "\x00" in value:
        raise InvalidInput(f"{what} must be a single line")
    return value


def check_channel(value: str) -> str:
    """A known channel name."""
    if value not in CHANNELS:
        raise InvalidInput(f"unknown channel {value!r}; use one of: {', '.join(CHANNELS)}")
    return value


def check_chat_id(value: str) -> str:
    """A platform's own chat id (e.g. telegram -1001234, slack C0123)."""
    if not value or len(value) > 128 or any(c.isspace() or ord(c) < 32 for c in value):
        raise InvalidInput(f"chat id {value!r} must be 1-128 characters without spaces")
    return value
