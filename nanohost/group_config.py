"""Editing a group's container config, and what it resolves to at the next wake.

An edit is validated whole before any field changes, so a refused option leaves the row as it
was even when other options in the same command were fine.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from nanohost.auth import check_auth_mode
from nanohost.containers.image import IMAGE_COMMANDS, WORKSPACE_PREFIX, image_has_command
from nanohost.db.models import ENGAGE_MODES, AgentGroup
from nanohost.groups import check_provider
from nanohost.limits import EngineResources, check_limits
from nanohost.quota import parse_quota
from nanohost.settings import Settings
from nanohost.skills import check_skill
from nanohost.validation import (
    InvalidInput,
    check_env_name,
    check_env_value,
    check_name,
    check_single_line,
)

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_MCP_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HOST_PATTERN = re.compile(r"^(\*\.)?([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}$")
MAX_INSTRUCTIONS = 64 * 1024


def normalize_effort(value: str) -> str:
    """Reasoning effort, case-insensitive; anything outside Codex's set is refused."""
    effort = value.strip().lower()
    if effort not in REASONING_EFFORTS:
        raise InvalidInput(f"unknown reasoning effort {value!r}; use one of: {', '.join(REASONING_EFFORTS)}")
    return effort


@dataclass
class McpServerSpec:
    """An MCP server the group's agent may use, started inside its container."""

    name: str
    command: str
    args: list[str] = field(default_factory=list)
    instructions: str | None = None

    def validated(self) -> McpServerSpec:
        if not _MCP_NAME_RE.match(self.name):
            raise InvalidInput(f"MCP server name {self.name!r} must be 1-64 letters, digits, '_' or '-'")
        if not self.command.strip():
            raise InvalidInput("--mcp-add needs --command")
        check_single_line(self.command, "--command")
        if not image_has_command(self.command):
            raise InvalidInput(
                f"--command {self.command!r} is not in the agent image (it has no network, npx, node or "
                f"uv); use one it has: {', '.join(sorted(IMAGE_COMMANDS))}, /opt/venv/bin/python (with "
                f"the mcp SDK), or a program in the group's folder ({WORKSPACE_PREFIX}…). To add one, "
                "install it in container/Dockerfile and list it in IMAGE_COMMANDS "
                "(nanohost/containers/image.py), then `nanohost image build`"
            )
        for arg in self.args:
            check_single_line(arg, "--arg")
        if self.instructions is not None and len(self.instructions.encode()) > MAX_INSTRUCTIONS:
            raise InvalidInput(f"--instructions is larger than {MAX_INSTRUCTIONS // 1024} KiB")
        return self

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"command": self.command, "args": list(self.args), "env": {}}
        if self.instructions:
            row["instructions"] = self.instructions
        return row


@dataclass
class ConfigEdit:
    """Every change ``nanohost groups config`` can make; ``None``/empty means "leave as is"."""

    model: str | None = None
    effort: str | None = None
    provider: str | None = None
    set_env: list[str] = field(default_factory=list)  # "K=V"
    unset_env: list[str] = field(default_factory=list)
    mcp_add: McpServerSpec | None = None
    mcp_remove: list[str] = field(default_factory=list)
    memory: str | None = None
    cpus: float | None = None
    pids: int | None = None
    allow_senders: list[str] = field(default_factory=list)
    deny_senders: list[str] = field(default_factory=list)
    engage: str | None = None
    trigger: str | None = None
    add_skills: list[str] = field(default_factory=list)
    remove_skills: list[str] = field(default_factory=list)
    allow_egress: list[str] = field(default_factory=list)
    deny_egress: list[str] = field(default_factory=list)
    auth: str | None = None  # api-key | chatgpt (nanohost.auth)
    disk_quota: str | None = None  # 50g, 0 (none), or "default" (the host's)

    def is_empty(self) -> bool:
        return self == ConfigEdit()

    def needs_wake(self) -> bool:
        """Whether a part of the edit reaches the container (the router reads the rest, the
        allow-list and engage mode, for every message, so those apply at once)."""
        routing = {"allow_senders", "deny_senders", "engage", "trigger", "disk_quota"}  # host-side
        return any(getattr(self, f.name) not in (None, []) for f in fields(self) if f.name not in routing)


def _merged(current: list[str], add: list[str], remove: list[str]) -> list[str]:
    """``current`` plus ``add`` (in order, no repeats) minus ``remove``."""
    merged = list(current) + [item for item in dict.fromkeys(add) if item not in current]
    return [item for item in merged if item not in remove]


def _parse_env(pairs: list[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"--env {pair!r} must look like NAME=VALUE")
        parsed[check_env_name(name)] = check_env_value(name, value)
    return parsed


def _check_stored_env(env: dict[str, Any]) -> None:
    """The env the group keeps (after this edit) must pass the rule too: a row written by other
    means, or under an older rule, is refused here with the way out, not first at the wake."""
    for name, value in env.items():
        try:
            check_env_name(str(name))
            check_env_value(str(name), value)
        except InvalidInput as exc:
            raise InvalidInput(f"the group's stored {exc}; remove it with --unset-env {name}") from None


def apply_edit(
    group: AgentGroup, edit: ConfigEdit, probe: Callable[[], EngineResources] | None = None
) -> list[str]:
    """Validate ``edit`` whole, then apply it to the group's config. Returns what changed.

    ``probe`` gives what the container engine has (``limits.engine_resources``); with it, a
    memory or CPU limit beyond the engine's is refused now rather than at the next wake.
    """
    config = group.config
    changes: list[str] = []
    # --- validate everything first -------------------------------------------------------
    model = check_single_line(edit.model.strip(), "--model") if edit.model is not None else None
    if model is not None and not model:
        raise InvalidInput("--model must not be empty")
    effort = normalize_effort(edit.effort) if edit.effort is not None else None
    provider = check_provider(edit.provider) if edit.provider is not None else None
    env_set = _parse_env(edit.set_env)
    for name in edit.unset_env:
        if name not in config.env and name not in env_set:
            raise InvalidInput(f"env {name!r} is not set for group {group.name!r}")
    env_after = {**config.env, **env_set}
    for name in edit.unset_env:
        env_after.pop(name, None)
    _check_stored_env(env_after)
    mcp_add = edit.mcp_add.validated() if edit.mcp_add else None
    for name in edit.mcp_remove:
        if name not in config.mcp_servers:
            raise InvalidInput(f"group {group.name!r} has no MCP server {name!r}")
    memory = edit.memory.strip().lower() if edit.memory is not None else None
    check_limits(memory=memory, cpus=edit.cpus, pids=edit.pids, probe=probe)
    disk_quota = edit.disk_quota.strip().lower() if edit.disk_quota is not None else None
    if disk_quota not in (None, "default"):
        try:
            parse_quota(disk_quota)
        except ValueError as exc:
            raise InvalidInput(f"--disk-quota: {exc} (or 0 for none, default for the host's)") from None
    for sender in [*edit.allow_senders, *edit.deny_senders]:
        if not sender.strip() or len(sender) > 128:
            raise InvalidInput(f"sender id {sender!r} must be 1-128 characters")
    for sender in edit.deny_senders:
        if sender not in config.allowed_senders and sender not in edit.allow_senders:
            raise InvalidInput(f"sender {sender!r} is not on group {group.name!r}'s allow-list")
    engage = edit.engage.lower() if edit.engage is not None else None
    if engage is not None and engage not in ENGAGE_MODES:
        raise InvalidInput(f"unknown engage mode {edit.engage!r}; use one of: {', '.join(ENGAGE_MODES)}")
    trigger = edit.trigger.strip() if edit.trigger is not None else None
    if trigger is not None and (not trigger or len(trigger) > 64 or any(c.isspace() for c in trigger)):
        raise InvalidInput("--trigger must be one word of at most 64 characters")
    if (engage or config.engage_mode) == "trigger" and not (trigger or config.trigger_word):
        raise InvalidInput("--engage trigger needs --trigger WORD")
    for skill in edit.remove_skills:
        check_name(skill, "skill name")
    for skill in edit.add_skills:
        if skill not in config.skills:  # one selected before a skill was removed may stay
            check_skill(skill)
    for skill in edit.remove_skills:
        if skill not in config.skills and skill not in edit.add_skills:
            raise InvalidInput(f"skill {skill!r} is not selected for group {group.name!r}")

    for pattern in edit.allow_egress:
        if not _HOST_PATTERN.match(pattern):
            raise InvalidInput(
                f"egress pattern {pattern!r} must be a host name, optionally starting with '*.'"
            )
    for pattern in edit.deny_egress:
        if pattern not in config.egress_allow and pattern not in edit.allow_egress:
            raise InvalidInput(f"{pattern!r} is not on group {group.name!r}'s egress allow-list")

    auth = check_auth_mode(edit.auth) if edit.auth is not None else None

    # --- then apply ----------------------------------------------------------------------
    if model is not None:
        config.model = model
        changes.append(f"model = {model}")
    if effort is not None:
        config.reasoning_effort = effort
        changes.append(f"reasoning effort = {effort}")
    if auth is not None:
        config.auth = auth
        changes.append(f"auth = {auth}")
    if provider is not None:
        group.agent_provider = provider
        changes.append(f"provider = {provider}")
    if env_set or edit.unset_env:
        config.env = env_after
        changes += [f"env {k} set" for k in env_set] + [f"env {k} unset" for k in edit.unset_env]
    if mcp_add is not None or edit.mcp_remove:
        servers = dict(config.mcp_servers)
        if mcp_add is not None:
            servers[mcp_add.name] = mcp_add.as_row()
            changes.append(f"MCP server {mcp_add.name} added")
        for name in edit.mcp_remove:
            servers.pop(name, None)
            changes.append(f"MCP server {name} removed")
        config.mcp_servers = servers
    if memory is not None:
        config.memory_limit = memory
        changes.append(f"memory = {memory}")
    if edit.cpus is not None:
        config.cpu_limit = edit.cpus
        changes.append(f"cpus = {edit.cpus:g}")
    if edit.pids is not None:
        config.pids_limit = edit.pids
        changes.append(f"pids = {edit.pids}")
    if disk_quota is not None:
        config.disk_quota = None if disk_quota == "default" else disk_quota
        changes.append(f"disk quota = {config.disk_quota or 'the host default'}")
    if edit.allow_senders or edit.deny_senders:
        config.allowed_senders = _merged(config.allowed_senders, edit.allow_senders, edit.deny_senders)
        changes += [f"sender {s} allowed" for s in edit.allow_senders]
        changes += [f"sender {s} removed from allow-list" for s in edit.deny_senders]
    if trigger is not None:
        config.trigger_word = trigger
        changes.append(f"trigger = {trigger}")
    if engage is not None:
        config.engage_mode = engage
        changes.append(f"engage = {engage}")
    if edit.add_skills or edit.remove_skills:
        config.skills = _merged(config.skills, edit.add_skills, edit.remove_skills)
        changes += [f"skill {s} selected" for s in edit.add_skills]
        changes += [f"skill {s} deselected" for s in edit.remove_skills]
    if edit.allow_egress or edit.deny_egress:
        allow = [h.lower() for h in edit.allow_egress]
        config.egress_allow = _merged(config.egress_allow, allow, edit.deny_egress)
        changes += [f"egress to {h} allowed" for h in edit.allow_egress]
        changes += [f"egress to {h} removed" for h in edit.deny_egress]
    return changes


def effective_config(settings: Settings, group: AgentGroup) -> dict[str, Any]:
    """What the group's next wake will use: its own values, else the host defaults."""
    config = group.config
    return {
        "name": group.name,
        "folder": group.folder,
        "provider": group.agent_provider,
        "model": config.model,
        "reasoning_effort": config.reasoning_effort,
        "auth": config.auth,
        "memory": config.memory_limit or settings.container_memory,
        "cpus": config.cpu_limit if config.cpu_limit is not None else settings.container_cpus,
        "pids": config.pids_limit if config.pids_limit is not None else settings.container_pids,
        "disk_quota": config.disk_quota or settings.group_disk_quota,
        "engage": config.engage_mode,
        "trigger": config.trigger_word,
        "allowed_senders": list(config.allowed_senders) or "everyone",
        "env": dict(config.env),
        "mcp_servers": dict(config.mcp_servers),
        "skills": list(config.skills),
        "additional_mounts": list(config.additional_mounts),
        "egress_allow": list(config.egress_allow) or "none (model API only)",
        "folder_path": str(settings.groups_dir / group.folder),
        "image": settings.image_tag,
    }
