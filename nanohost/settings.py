"""Every knob of the host, in one place.

Values come from the environment (prefix ``NANOHOST_``) and from a ``.env`` file in the working
directory. A bad value stops the host at start with a message that names the environment
variable, because a typo found at the first message of the day is a typo found too late.
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from nanohost.limits import MAX_CPUS, MAX_PIDS, MIN_CPUS, MIN_PIDS
from nanohost.limits import parse_memory as parse_memory  # its home was here; callers still import it
from nanohost.quota import parse_quota

ENV_PREFIX = "NANOHOST_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout (or install) root: templates, migrations and the container build context live here."""

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")


class SettingsError(ValueError):
    """Settings could not be loaded; the message names each bad variable and what is wrong."""


class Settings(BaseSettings):
    """The host's configuration. Field ``foo`` is read from ``NANOHOST_FOO``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Field(default=Path("data"), description="State: database, sessions, Codex homes.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file nanohost.db in the data dir."
    )
    groups_dir: Path = Field(default=PROJECT_ROOT / "groups", description="One folder per group.")
    image_name: str = Field(default="nanohost-agent", description="Agent image repository name.")
    codex_version: str = Field(default="0.138.0", description="Codex CLI version baked into the image.")
    image_ca_file: Path | None = Field(
        default=None,
        description="Extra CA bundle trusted during image builds (default: $SSL_CERT_FILE when set).",
    )
    idle_timeout: float = Field(default=1800.0, gt=0, description="Seconds before an idle container stops.")
    sweep_interval: float = Field(default=60.0, gt=0, description="Seconds between sweeper passes.")
    turn_timeout: float = Field(default=600.0, gt=0, description="Seconds before a hung turn is ended.")
    max_containers: int = Field(default=8, ge=1, le=1000, description="Running containers at most.")
    slot_quantum: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds a container keeps its slot while wakes wait before it yields between turns.",
    )
    container_memory: str = Field(default="1g", description="Default memory limit per container.")
    group_disk_quota: str = Field(
        default="10g",
        description="Disk a group's container may fill (its folder, agent state, own layer); 0 turns it off.",
    )
    container_cpus: float = Field(
        default=1.0,
        ge=MIN_CPUS,
        le=MAX_CPUS,
        allow_inf_nan=False,
        description="Default CPU limit per container.",
    )
    container_pids: int = Field(default=256, ge=MIN_PIDS, le=MAX_PIDS, description="Default process limit.")
    spare_netns: int = Field(
        default=2,
        ge=0,
        le=32,
        description=(
            "Network-less namespaces kept ready so a cold start joins one instead of making its own "
            "(~100 ms faster; ~3 MB of memory each; 0: off). See nanohost/containers/netns.py."
        ),
    )
    allowed_mounts: list[Path] = Field(
        default_factory=list, description="Host paths a group may mount (JSON list), none by default."
    )
    web_host: str = Field(default="127.0.0.1", min_length=1, description="Web chat / API bind address.")
    web_port: int = Field(default=8080, ge=1, le=65535, description="Web chat / API port.")
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description=(
            "Reverse proxies (IPs or CIDRs, comma-separated or a JSON list) whose X-Forwarded-For, "
            "X-Forwarded-Proto and Forwarded headers the web chat believes; none by default."
        ),
    )
    api_token: SecretStr | None = Field(default=None, description="Bearer token for the HTTP API.")
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("NANOHOST_OPENAI_API_KEY", "OPENAI_API_KEY"),
        description="The real model credential; only the gateway ever holds it.",
    )
    model_base_url: str = Field(
        default="https://api.openai.com/v1", description="Responses API base URL the gateway forwards to."
    )
    # --- ChatGPT sign-in (nanohost/auth/) -------------------------------------------------
    auth_issuer: str = Field(
        default="https://auth.openai.com",
        description="OAuth issuer of the ChatGPT sign-in (token refresh, device-code login).",
    )
    chatgpt_base_url: str = Field(
        default="https://chatgpt.com/backend-api/codex",
        description="ChatGPT backend the gateway forwards chatgpt-auth groups to ({url}/responses).",
    )
    chatgpt_refresh_interval: float = Field(
        default=60.0,
        ge=0,
        description="Seconds at least between two ChatGPT token refreshes (a 401 loop cannot rotate more).",
    )
    auth_key_file: Path | None = Field(
        default=None,
        description="Key file encrypting the ChatGPT tokens at rest (made 0600 if missing); none: plain.",
    )
    # --- end ChatGPT sign-in ----------------------------------------------------------------
    log_level: LogLevel = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text, or json: one JSON object per line with session and group ids."
    )
    disk_low_bytes: int = Field(
        default=100 * 1024**2,
        ge=0,
        description="Free bytes in the data dir below which /healthz says the disk is low (503).",
    )
    max_attachment_bytes: int = Field(
        default=20 * 1024**2, ge=1024, description="Largest file a chat user may send the agent (bytes)."
    )
    telegram_token: SecretStr | None = Field(default=None, description="Telegram bot token; on when set.")
    telegram_api_base: str = Field(
        default="https://api.telegram.org", description="Telegram Bot API base URL."
    )
    slack_app_token: SecretStr | None = Field(
        default=None,
        description="Slack app-level token (xapp-…) for Socket Mode; Slack is on when both are set.",
    )
    slack_bot_token: SecretStr | None = Field(default=None, description="Slack bot token (xoxb-…).")
    slack_api_base: str = Field(default="https://slack.com/api", description="Slack Web API base URL.")
    discord_token: SecretStr | None = Field(default=None, description="Discord bot token; on when set.")
    discord_api_base: str = Field(
        default="https://discord.com/api/v10",
        description="Discord REST API base URL (the gateway URL comes from it).",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "api_token", "telegram_token", "slack_app_token", "slack_bot_token", "discord_token", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("container_memory")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        parse_memory(value)
        return value.strip().lower()

    @field_validator("group_disk_quota")
    @classmethod
    def _check_quota(cls, value: str) -> str:
        parse_quota(value)
        return value.strip().lower()

    @property
    def group_disk_quota_bytes(self) -> int:
        """The quota in bytes; 0 when off."""
        return parse_quota(self.group_disk_quota)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = (
                    json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p.strip()]
                )
            except ValueError:
                raise ValueError(
                    f"{text!r} is not a JSON list; or give addresses separated by commas"
                ) from None
        if not isinstance(value, list | tuple):
            return value
        networks: list[IPv4Network | IPv6Network] = []
        for item in value:
            try:
                networks.append(ip_network(str(item).strip(), strict=False))
            except ValueError:
                raise ValueError(f"{str(item).strip()!r} is not an IP address or network (CIDR)") from None
        return networks

    @field_validator("codex_version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not _VERSION_RE.match(value):
            raise ValueError(f"{value!r} is not a version like 0.138.0")
        return value

    @field_validator("image_name")
    @classmethod
    def _check_image_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", value):
            raise ValueError(f"{value!r} is not a valid image name (lowercase letters, digits, . _ - /)")
        return value

    @field_validator(
        "model_base_url",
        "telegram_api_base",
        "slack_api_base",
        "discord_api_base",
        "auth_issuer",
        "chatgpt_base_url",
    )
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("data_dir", "groups_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("auth_key_file")
    @classmethod
    def _absolute_key(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("allowed_mounts")
    @classmethod
    def _absolute_mounts(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if not path.expanduser().is_absolute():
                raise ValueError(f"{str(path)!r} is not an absolute path")
        return [path.expanduser().resolve() for path in value]

    @field_validator("image_ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is None:
            env = os.environ.get("SSL_CERT_FILE")
            return Path(env) if env and Path(env).is_file() else None
        if not value.is_file():
            raise ValueError(f"{str(value)!r} is not a readable file")
        return value

    @cached_property
    def db_url(self) -> str:
        """The effective database URL."""
        return self.database_url or f"sqlite:///{self.data_dir / 'nanohost.db'}"

    @property
    def image_tag(self) -> str:
        """The agent image this host runs: ``<image_name>:<codex_version>-<content hash>``, the hash
        of everything that goes into the image (``nanohost.containers.image.content_hash``)."""
        from nanohost.containers.image import image_tag  # the image module imports this one

        return image_tag(self.image_name, self.codex_version)

    @property
    def sessions_dir(self) -> Path:
        """Per-session transport directories (mounted at /workspace/session)."""
        return self.data_dir / "sessions"

    @property
    def codex_homes_dir(self) -> Path:
        """Per-group Codex state (mounted at the container user's ~/.codex)."""
        return self.data_dir / "codex"


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    if field == "openai_api_key":
        return "OPENAI_API_KEY (or NANOHOST_OPENAI_API_KEY)"
    return ENV_PREFIX + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Load settings, turning pydantic's errors into one line per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            message = str(error["msg"]).removeprefix("Value error, ")
            given = error.get("input")
            shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
            lines.append(f"{env_name(field)}: {message}{shown}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
