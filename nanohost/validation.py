"""Checks on operator and platform input, each with a message that says what to do instead.

One place for the rules, so the CLI, the HTTP API and the host refuse the same things the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_NAME = 64
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_NAME = 128
MAX_ENV_VALUE = 4096
# The env-name rule (``check_env_name``), on the name upper-cased:
_CREDENTIAL_WORDS = frozenset(
    {"KEY", "KEYS", "TOKEN", "TOKENS", "PASS", "AUTH", "AUTHN", "AUTHZ", "OAUTH", "PAT", "JWT", "BEARER"}
)
"""A ``_``-separated part equal to one of these (so MONKEY, KEYBOARD, TOKENIZERS, AUTHOR pass)."""
_CREDENTIAL_ENDINGS = ("TOKEN", "TOKENS")
"""A part ending in one of these (ACCESSTOKEN, GITHUBTOKEN)."""
_CREDENTIAL_INSIDE = (
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "COOKIE",
    "APIKEY",
    "ACCESSKEY",
    "PRIVATEKEY",
    "SESSIONID",
    "AUTHORIZATION",
    "AUTHENTICATION",
)
"""Anywhere in the name with its ``_`` removed (APIKEY, API_KEY, MY_SECRET, JSESSIONID)."""
_RESERVED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "NODE_OPTIONS",
        "NODE_PATH",
        "NODE_EXTRA_CA_CERTS",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "RUBYOPT",
        "RUBYLIB",
        "GCONV_PATH",
        "LOCPATH",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
    }
)
_RESERVED_PREFIXES = ("LD_", "DYLD_", "PYTHON", "NANOHOST_", "CODEX_", "OPENAI_")
"""Loader, interpreter and runtime settings, and the host's own names: only the image and the
runner set these, since they change what every program in the container loads, runs or reaches."""
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
    """An environment name for a group's container. Refused, compared case-insensitively:

    - anything but a shell identifier (letters, digits, ``_``; no leading digit), or longer
      than ``MAX_ENV_NAME``;
    - a name that looks like a credential: a ``_``-separated part that is KEY, TOKEN, PASS,
      AUTH, PAT, JWT… (``_CREDENTIAL_WORDS``) or ends in TOKEN, or the name without its ``_``
      containing SECRET, PASSWORD, PASSWD, CREDENTIAL, COOKIE, APIKEY, SESSIONID,
      AUTHORIZATION… (``_CREDENTIAL_INSIDE``). Credentials never enter a container: the
      gateway injects the model key, and other secrets belong on the host side;
    - a loader, interpreter or runtime setting, or a name the host and runner own: LD_*,
      PYTHON*, NODE_OPTIONS, BASH_ENV, ENV, PATH, HOME, CODEX_*, the proxy variables,
      NANOHOST_*… (``_RESERVED_NAMES``, ``_RESERVED_PREFIXES``).

    The credential rule is a guard against the obvious mistake, not a secret scanner: it
    cannot know that ``DATABASE_URL`` holds a password.
    """
    if not _ENV_NAME_RE.match(name):
        raise InvalidInput(f"env name {name!r} must be letters, digits and '_' and not start with a digit")
    if len(name) > MAX_ENV_NAME:
        raise InvalidInput(f"env name {name[:16]!r}… is longer than {MAX_ENV_NAME} characters")
    upper = name.upper()
    parts = [part for part in upper.split("_") if part]
    if any(part in _CREDENTIAL_WORDS or part.endswith(_CREDENTIAL_ENDINGS) for part in parts) or any(
        word in upper.replace("_", "") for word in _CREDENTIAL_INSIDE
    ):
        raise InvalidInput(
            f"env name {name!r} looks like a credential; credentials never enter a container "
            "(the gateway injects the model key)"
        )
    if upper in _RESERVED_NAMES or upper.startswith(_RESERVED_PREFIXES):
        raise InvalidInput(
            f"env name {name!r} is reserved: it changes what programs in the container load, run or "
            "connect to, so only the image and the host set it"
        )
    return name


def check_env_value(name: str, value: object) -> str:
    """An env value: a string (numbers are taken as text) on one line, without NUL bytes, at most
    ``MAX_ENV_VALUE`` characters."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"value of {name} must be a string")
    text = str(value)
    if "\x00" in text:
        raise InvalidInput(f"value of {name} must not contain a NUL byte")
    if "\n" in text or "\r" in text:
        raise InvalidInput(f"value of {name} must be a single line")
    if len(text) > MAX_ENV_VALUE:
        raise InvalidInput(f"value of {name} is longer than {MAX_ENV_VALUE} characters")
    return text


def check_env(env: object) -> dict[str, str]:
    """A group's whole env row, however it was written: every name and value as above.

    The CLI checks each ``--env`` with this rule, and the host checks the stored row again when
    it reads it for a wake, so a row written by other means is refused too.
    """
    if not isinstance(env, Mapping):
        raise InvalidInput("the group's env must be a mapping of NAME to value")
    return {check_env_name(str(name)): check_env_value(str(name), value) for name, value in env.items()}


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
