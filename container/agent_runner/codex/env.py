"""The environment `codex app-server` gets: the container's, less the runner's own variables.

Codex runs the commands the model asks for with this environment, so whatever is here is one
``env`` away from the model. That is the point for the operator's variables
(``nanohost groups config NAME --env TZ=Europe/Paris``): they arrive as the container's
environment and must reach the agent's commands. Passing the container's environment through is
safe because of who writes it:

- the image (``container/Dockerfile``: PATH, HOME, LANG, PYTHONPATH…), which holds no secret;
- the host, from the group's env row, whose names pass ``nanohost.validation.check_env_name`` when
  they are set and again at every wake: credential-like names (``*_KEY``, ``*_TOKEN``,
  ``*SECRET*``…) and loader or runtime settings (``LD_*``, ``PYTHON*``, ``CODEX_*``,
  ``NANOHOST_*``…) never reach a container. That is the one rule; the runner keeps no second,
  different secret pattern.

Dropped here all the same:

- ``NANOHOST_*``: the runner's own settings (session dir, log level, Codex binary); the gateway
  placeholder Codex needs is set explicitly under ``PLACEHOLDER_ENV``;
- ``CODEX_*`` and ``OPENAI_*``: they change how Codex itself runs or which model endpoint and key
  it uses; Codex reaches the model only through the gateway (``CODEX_HOME`` is set explicitly);
- ``LD_*`` / ``DYLD_*``: loader injection into every program the agent starts.

These matter where the runner runs outside a container (tests, development), with whatever
environment its caller had.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent_runner.codex.config import PLACEHOLDER_ENV

DROPPED_PREFIXES = ("NANOHOST_", "CODEX_", "OPENAI_", "LD_", "DYLD_")
"""Names (compared upper-cased) that never pass from the container's environment to Codex."""
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def passes(name: str) -> bool:
    """Whether the variable ``name`` of the container's environment reaches Codex and its commands."""
    return bool(name) and not name.upper().startswith(DROPPED_PREFIXES)


def codex_env(source: Mapping[str, str], *, codex_home: str, home: str, placeholder: str) -> dict[str, str]:
    """Build the app-server's environment from ``source`` (normally os.environ)."""
    env = {k: v for k, v in source.items() if passes(k)}
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOME"] = home
    env["CODEX_HOME"] = codex_home
    env[PLACEHOLDER_ENV] = placeholder
    return env
