"""Signing the host into a ChatGPT plan, and keeping that sign-in alive for every group.

A group authenticates to the model one of two ways (``groups config G --auth``):

- ``api-key`` (the default): the gateway injects ``OPENAI_API_KEY`` and forwards to the
  Responses API (``NANOHOST_MODEL_BASE_URL``).
- ``chatgpt``: the host is signed into a ChatGPT plan (``nanohost auth login``); the gateway
  injects the plan's access token and account id and forwards to the ChatGPT backend
  (``NANOHOST_CHATGPT_BASE_URL``). Codex in the container takes its ChatGPT request path with a
  dummy ``auth.json`` whose "tokens" are the session's placeholder (``agent_runner.codex.chatgpt``).

The parts, one file each:

- ``tokens``: what a sign-in is (the tokens, the claims read from the id token), and reading
  a Codex ``auth.json``.
- ``store``: the one place the tokens live (``<data dir>/auth/chatgpt.json``, 0600, replaced
  atomically and fsynced), with the "broken" mark when a refresh was refused.
- ``oauth``: the OAuth calls (refresh, device-code login), against ``NANOHOST_AUTH_ISSUER``.
- ``refresher``: one refresh at a time across the host process *and* the CLI (an asyncio lock
  plus a file lock), the rotated refresh token saved before the new access token is used.
- ``upstream``: the gateway's ChatGPT route (refresh once on a 401, retry once).
"""

from __future__ import annotations

from nanohost.validation import InvalidInput

AUTH_MODES = ("api-key", "chatgpt")
DEFAULT_AUTH = "api-key"


def check_auth_mode(value: object) -> str:
    """A group's auth mode, as stored; anything else is refused (also when read back at a wake)."""
    if value is None:
        return DEFAULT_AUTH
    if not isinstance(value, str) or value.strip().lower() not in AUTH_MODES:
        raise InvalidInput(f"unknown auth mode {value!r}; use one of: {', '.join(AUTH_MODES)}")
    return value.strip().lower()
