"""The container backend: one port, one Docker implementation.

Every agent container is started the same locked-down way: no network, every capability
dropped, no privilege escalation, an init as PID 1 (so SIGTERM reaches the runner and stops are
clean), memory/CPU/pids limits, and labels that let a restarted host find what it started.
Containers are not auto-removed: their output and exit reason are kept until the next start.
The docker SDK is synchronous, so calls run in a worker thread.

One engine may serve several installations (two data dirs, or the test suite beside a serving
host). Each installation's containers carry its id (label ``nanohost.installation`` and their
name), and a backend made for an installation lists, replaces and clashes with its own only.

``EngineWatch`` is the backend as the host uses it: while the engine is away, a start waits for it
to come back instead of failing, so an engine outage is never counted as a session's crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nanohost.containers.netns import LABEL_JOINED, NetworkSandboxes, owner_of, remove_quietly
from nanohost.providers import Mount
from nanohost.safe_fs import AGENT_UID
from nanohost.settings import parse_memory
from nanohost.validation import InvalidInput

log = logging.getLogger(__name__)

CONTAINER_HOSTNAME = "nanohost-agent"
"""Every agent container's hostname, mapped to 127.0.0.1 in its /etc/hosts. Without a network,
Docker leaves the hostname out of /etc/hosts, and Codex resolving its own hostname at start then
waits out a 5 s DNS timeout (measured: initialize 5.1 s → 0.14 s with the mapping)."""
LABEL_GROUP = "nanohost.group"
LABEL_SESSION = "nanohost.session"
LABEL_INSTALLATION = "nanohost.installation"
EXTRA_HOSTS = {CONTAINER_HOSTNAME: "127.0.0.1"}


class SandboxGone(Exception):
    """The spare network namespace a container was to join is gone or stopped."""


def container_user() -> tuple[int, int]:
    """The uid:gid the agent runs as: the host user's, or the image's ``agent`` (1000) under root."""
    uid, gid = os.getuid(), os.getgid()
    return (AGENT_UID, AGENT_UID) if uid == 0 else (uid, gid)


@dataclass(frozen=True)
class ContainerSpec:
    """What to start."""

    name: str
    image: str
    mounts: list[Mount]
    labels: dict[str, str]
    memory: str = "1g"
    cpus: float = 1.0
    pids: int = 256
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerState:
    """What a container is doing, as far as the engine knows."""

    id: str
    name: str
    running: bool
    exit_code: int | None = None
    error: str | None = None
    oom_killed: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    mounts: tuple[str, ...] = ()
    """The host paths it mounts (empty when the backend does not say)."""
    writable_mounts: tuple[str, ...] = ()
    """Those of ``mounts`` bound writable: the host trees its agent can fill (``quota.py``)."""

    @property
    def exit_reason(self) -> str:
        if self.running:
            return "running"
        parts = [f"exit code {self.exit_code}"]
        if self.oom_killed:
            parts.append("killed: out of memory")
        if self.error:
            parts.append(self.error)
        return ", ".join(parts)


class ContainerBackend(Protocol):
    """The orchestrator's view of a container engine."""

    async def run(self, spec: ContainerSpec) -> str: ...

    async def stop(self, container_id: str, grace: float = 10) -> None: ...

    async def kill(self, container_id: str) -> None: ...

    async def inspect(self, container_id: str) -> ContainerState | None: ...

    async def list_managed(self) -> list[ContainerState]: ...

    async def logs(self, container_id: str, tail: int = 50) -> str: ...

    async def ping(self) -> bool: ...

    async def layer_bytes(self, container_id: str) -> int | None:
        """What the container wrote to its own filesystem (not its mounts); None when unknown."""
        ...

    async def tend(self) -> None:
        """Housekeeping at each sweep (the Docker backend's spare network namespaces)."""
        ...


def _state(container: Any) -> ContainerState:
    attrs = container.attrs
    status = attrs.get("State", {})
    return ContainerState(
        id=container.id,
        name=container.name,
        running=bool(status.get("Running")),
        exit_code=status.get("ExitCode"),
        error=status.get("Error") or None,
        oom_killed=bool(status.get("OOMKilled")),
        labels=dict(attrs.get("Config", {}).get("Labels") or {}),
        mounts=tuple(str(m.get("Source", "")) for m in attrs.get("Mounts") or []),
        writable_mounts=tuple(
            str(m["Source"]) for m in attrs.get("Mounts") or [] if m.get("RW") and m.get("Source")
        ),
    )


def mounts_under(state: ContainerState, root: Path) -> bool:
    """Whether the container mounts anything inside ``root`` (a data dir)."""
    return any(Path(source).is_relative_to(root) for source in state.mounts if source)


class DockerBackend:
    """ContainerBackend on the local Docker engine through the docker SDK.

    Made for an ``installation``, it lists only the containers labelled with that id, plus those a
    host from before installation ids started on the same ``data_dir`` (no installation label, a
    mount inside it), so that the host can stop them. Without one it lists every nanohost container
    (tools and tests looking at the whole engine)."""

    def __init__(
        self,
        client: Any | None = None,
        *,
        installation: str | None = None,
        data_dir: Path | None = None,
        spare_netns: int = 0,
    ) -> None:
        self._client = client
        self.installation = installation
        self.data_dir = data_dir
        self.sandboxes: NetworkSandboxes | None = None
        """Spare network namespaces (``netns.py``); an installation's backend only (with 0 spares
        too: it still sweeps up those a host before it left)."""
        if installation is not None:
            self.sandboxes = NetworkSandboxes(
                lambda: self.client,
                installation=installation,
                owner=owner_of(data_dir) if data_dir is not None else installation,
                spares=spare_netns,
                hostname=CONTAINER_HOSTNAME,
                extra_hosts=EXTRA_HOSTS,
                labels={LABEL_INSTALLATION: installation},
            )

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env()
        return self._client

    def close(self) -> None:
        if self.sandboxes is not None:
            self.sandboxes.close()
        if self._client is not None:
            self._client.close()

    async def run(self, spec: ContainerSpec) -> str:
        return await asyncio.to_thread(self._run, spec)

    def _run(self, spec: ContainerSpec) -> str:
        """Replace the session's previous container, then create and start the new one. It joins a
        spare network namespace when one is ready (``netns.py``: ~100 ms less per start), else it
        gets its own (``none``); either way it has loopback only."""
        from docker.errors import NotFound

        try:
            old = self.client.containers.get(spec.name)
        except NotFound:
            pass
        else:
            self._replace(old, spec)
        sandbox = self.sandboxes.claim(spec.image) if self.sandboxes is not None else None
        if sandbox is None:
            return self._create_and_start(spec, None)
        assert self.sandboxes is not None
        joined = False
        try:
            container_id = self._create_and_start(spec, sandbox)
            joined = True
            return container_id
        except SandboxGone as exc:  # the spare died (engine restarted?): the container makes its own
            log.warning("could not join network sandbox %s (%s); %s gets its own", sandbox, exc, spec.name)
            return self._create_and_start(spec, None)
        finally:
            self.sandboxes.joined(sandbox)
            if not joined:
                self.sandboxes.remove(sandbox)

    def _create_and_start(self, spec: ContainerSpec, sandbox: str | None) -> str:
        """Create and start through the engine's API directly: two calls (the SDK's
        ``containers.run`` adds an image lookup and an inspect)."""
        from docker.errors import APIError, ImageNotFound
        from docker.types import Mount as DockerMount

        memory = parse_memory(spec.memory)
        uid, gid = container_user()
        api = self.client.api
        if sandbox is None:
            network: dict[str, Any] = {"network_mode": "none", "extra_hosts": EXTRA_HOSTS}
            labels, hostname = spec.labels, CONTAINER_HOSTNAME
        else:  # the sandbox has the hostname and hosts line: a joined container may not set them
            network = {"network_mode": f"container:{sandbox}"}
            labels, hostname = {**spec.labels, LABEL_JOINED: sandbox}, None
        host_config = api.create_host_config(
            mounts=[
                DockerMount(m.target, str(m.source), type="bind", read_only=m.read_only) for m in spec.mounts
            ],
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=True,
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=int(spec.cpus * 1e9),
            pids_limit=spec.pids,
            log_config={"type": "json-file", "config": {"max-size": "1m", "max-file": "2"}},
            **network,
        )
        try:
            created = api.create_container(
                spec.image,
                name=spec.name,
                user=f"{uid}:{gid}",
                environment=spec.env,
                labels=labels,
                hostname=hostname,
                host_config=host_config,
                detach=True,
            )
        except ImageNotFound:
            raise InvalidInput(
                f"the agent image {spec.image} is missing; run `nanohost image build`"
            ) from None
        container_id = str(created["Id"])
        try:
            api.start(container_id)
        except APIError as exc:
            # joining a spare that is gone (404) or stopped (409): this container is removed (by
            # id: only what this call made) and the caller starts one with its own namespace
            if sandbox is None or exc.status_code not in (404, 409):
                raise
            remove_quietly(self.client.api, container_id)
            raise SandboxGone(str(exc)) from exc
        return container_id

    def _release(self, container: Any) -> None:
        """The container has ended: remove the network sandbox it joined, if any."""
        sandbox = (container.labels or {}).get(LABEL_JOINED)
        if sandbox and self.sandboxes is not None:
            self.sandboxes.remove(sandbox)
        elif sandbox:  # a backend without spares (the CLI's) stopped a host's container
            remove_quietly(self.client.api, sandbox)

    def _replace(self, old: Any, spec: ContainerSpec) -> None:
        """A container already has the name: remove it when it is this installation's (one still
        running was started with a gateway grant the new start has just replaced, so it is stopped
        cleanly first); refuse to touch one of another installation's."""
        theirs = (old.labels or {}).get(LABEL_INSTALLATION)
        ours = spec.labels.get(LABEL_INSTALLATION)
        if theirs != ours:
            raise InvalidInput(
                f"a container named {spec.name} exists that this installation did not start "
                f"(installation {theirs or 'none'}, this one is {ours or 'none'}); it is left alone: "
                "remove it (`docker rm -f`) if it is not another host's"
            )
        if self.data_dir is not None and not mounts_under(_state(old), self.data_dir):
            raise InvalidInput(
                f"a container named {spec.name} carries this installation's id but mounts another data "
                "dir (a copy of this one?); it is left alone: give the copy its own id (delete the row "
                "of its database's `installation` table; the next start makes a new one)"
            )
        if old.status == "running":
            log.info("container %s is still running from an earlier start; stopping it first", spec.name)
            old.stop(timeout=10)
        old.remove(force=True)
        self._release(old)

    async def stop(self, container_id: str, grace: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        await asyncio.to_thread(self._call, container_id, "stop", timeout=int(grace))

    async def kill(self, container_id: str) -> None:
        await asyncio.to_thread(self._call, container_id, "kill")

    def _call(self, container_id: str, method: str, **kwargs: Any) -> None:
        from docker.errors import APIError, NotFound

        try:
            container = self.client.containers.get(container_id)
            getattr(container, method)(**kwargs)
        except NotFound:
            return
        except APIError as exc:  # e.g. killing a container that just exited
            if exc.status_code != 409:
                raise
        self._release(container)

    async def tend(self) -> None:
        if self.sandboxes is not None:
            await asyncio.to_thread(self.sandboxes.reap)

    async def layer_bytes(self, container_id: str) -> int | None:
        def size() -> int | None:
            # the engine walks the container's upper layer for this: a sweep-time call, never a wake's
            found = self.client.api.containers(all=True, size=True, filters={"id": container_id})
            return int(found[0].get("SizeRw") or 0) if found else None

        return await asyncio.to_thread(size)

    async def inspect(self, container_id: str) -> ContainerState | None:
        return await asyncio.to_thread(self._inspect, container_id)

    def _inspect(self, container_id: str) -> ContainerState | None:
        from docker.errors import NotFound

        try:
            return _state(self.client.containers.get(container_id))
        except NotFound:
            return None

    async def list_managed(self) -> list[ContainerState]:
        def listing() -> list[ContainerState]:
            if self.installation is None:
                found = self.client.containers.list(
                    all=True, ignore_removed=True, filters={"label": LABEL_GROUP}
                )
                return [_state(c) for c in found]
            own = self.client.containers.list(  # agents only: not the spare namespaces (netns.py)
                all=True,
                ignore_removed=True,
                filters={"label": [f"{LABEL_INSTALLATION}={self.installation}", LABEL_GROUP]},
            )
            states = [_state(c) for c in own]
            if self.data_dir is not None:
                for container in self.client.containers.list(
                    all=True, ignore_removed=True, filters={"label": LABEL_GROUP}
                ):
                    state = _state(container)
                    if LABEL_INSTALLATION not in state.labels and mounts_under(state, self.data_dir):
                        states.append(state)
            return states

        return await asyncio.to_thread(listing)

    async def logs(self, container_id: str, tail: int = 50) -> str:
        def read() -> str:
            from docker.errors import NotFound

            try:
                raw = self.client.containers.get(container_id).logs(tail=tail)
            except NotFound:
                return ""
            return bytes(raw).decode(errors="replace")

        return await asyncio.to_thread(read)

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.to_thread(self.client.ping))
        except Exception:
            return False


class EngineWatch:
    """The container backend as the host uses it: knows whether the engine answers, and while it
    does not, a start waits for it instead of failing.

    The sweeper (``Orchestrator``) pings the engine: ``lost`` closes the gate, ``back`` opens it
    again once what still runs has been adopted. A start that fails while the engine does not
    answer the ping closes the gate and waits too. Everything else passes straight through.
    """

    def __init__(self, backend: ContainerBackend) -> None:
        self.backend = backend
        self._up = asyncio.Event()
        self._up.set()

    @property
    def reachable(self) -> bool:
        return self._up.is_set()

    def lost(self, why: str) -> None:
        if self._up.is_set():
            log.warning("container engine not reachable (%s): wakes wait until it is back", why)
            self._up.clear()

    def back(self) -> None:
        if not self._up.is_set():
            log.info("container engine is back: waiting wakes go ahead")
            self._up.set()

    async def run(self, spec: ContainerSpec) -> str:
        while True:
            await self._up.wait()
            try:
                return await self.backend.run(spec)
            except InvalidInput:
                raise
            except Exception as exc:
                if await self.backend.ping():
                    raise
                self.lost(f"starting {spec.name} failed: {exc}")

    async def stop(self, container_id: str, grace: float = 10) -> None:
        await self.backend.stop(container_id, grace)

    async def kill(self, container_id: str) -> None:
        await self.backend.kill(container_id)

    async def inspect(self, container_id: str) -> ContainerState | None:
        return await self.backend.inspect(container_id)

    async def list_managed(self) -> list[ContainerState]:
        return await self.backend.list_managed()

    async def logs(self, container_id: str, tail: int = 50) -> str:
        return await self.backend.logs(container_id, tail)

    async def ping(self) -> bool:
        return await self.backend.ping()

    async def layer_bytes(self, container_id: str) -> int | None:
        return await self.backend.layer_bytes(container_id)

    async def tend(self) -> None:
        await self.backend.tend()
