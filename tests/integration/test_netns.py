"""Spare network namespaces (nanohost/containers/netns.py) on the real engine: a cold start joins a
spare made ahead of need, and the agent still has loopback only, its own namespace for its life,
and the hostname it needs; spares are locked down, never handed out twice, removed with their
agent, swept up after a crash, and a dead spare costs a start nothing but the time it saves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from docker.errors import NotFound

from nanohost.app import BACKEND
from nanohost.containers.backend import CONTAINER_HOSTNAME, DockerBackend
from nanohost.containers.netns import LABEL_JOINED, LABEL_NETNS, owner_of
from tests.integration.conftest import add_group, make_settings
from tests.support.host import Host, containers_of, installation_id

pytestmark = pytest.mark.docker

READY = 60.0


def sandboxes_of(docker_client: Any, installation: str) -> list[Any]:
    labels = [f"nanohost.installation={installation}", LABEL_NETNS]
    return list(docker_client.containers.list(all=True, filters={"label": labels}))


async def cold_reply(host: Host, group: str, text: str) -> None:
    """Stop the group's container (if any), then one message → its reply."""
    for runtime in list(host.orchestrator.runtimes.values()):
        if runtime.folder == group:
            await runtime.stop("test: cold start")
    message_id = await host.send(group, text)
    replies = await host.replies_after(group, message_id)
    assert [r["text"] for r in replies] == [f"echo: {text}"]


def agent_of(docker_client: Any, settings: Any, group: str) -> Any:
    (container,) = containers_of(docker_client, settings, group)
    return container


def spares_ready(host: Host) -> bool:
    backend = host.app[BACKEND]
    assert isinstance(backend, DockerBackend) and backend.sandboxes is not None
    return backend.sandboxes.wait_ready(READY)


async def host_with_spares(tmp_path: Path, start_host: Any) -> tuple[Host, Any]:
    """A host with one group, "team", that has answered once (so the backend knows the image),
    and its one spare ready."""
    settings = make_settings(tmp_path, spare_netns=1)
    add_group(settings, "team")
    host = await start_host(settings)
    await cold_reply(host, "team", "first")
    assert await asyncio.to_thread(spares_ready, host)
    return host, settings


def leave_a_spare(docker_client: Any, image: str, installation: str, owner: str) -> Any:
    """A spare as a host that died without closing leaves it."""
    return docker_client.containers.run(
        image,
        entrypoint=["sleep", "infinity"],
        name=f"nanohost-{installation}-netns-{owner[:4]}left",
        labels={"nanohost.installation": installation, LABEL_NETNS: owner},
        network_mode="none",
        detach=True,
    )


def exec_in(container: Any, *cmd: str) -> str:
    code, output = container.exec_run(list(cmd))
    assert code == 0, output
    return bytes(output).decode()


async def test_a_cold_start_joins_a_locked_down_spare_and_has_loopback_only(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path, spare_netns=2)
    add_group(settings, "team")
    add_group(settings, "other")
    host = await start_host(settings)
    installation = installation_id(settings)
    await cold_reply(host, "team", "first")  # no spares before the first start: its own namespace
    assert agent_of(docker_client, settings, "team").attrs["HostConfig"]["NetworkMode"] == "none"
    assert await asyncio.to_thread(spares_ready, host)

    await asyncio.gather(cold_reply(host, "team", "cold"), cold_reply(host, "other", "cold too"))
    team, other = agent_of(docker_client, settings, "team"), agent_of(docker_client, settings, "other")
    joined = {c.labels[LABEL_JOINED] for c in (team, other)}
    assert len(joined) == 2, "two containers never share a namespace"
    for agent in (team, other):
        sandbox = docker_client.containers.get(agent.labels[LABEL_JOINED])
        assert agent.attrs["HostConfig"]["NetworkMode"] == f"container:{sandbox.id}"
        # the agent sees loopback and nothing else, and its hostname resolves without DNS
        interfaces = [
            line.split(":")[0].strip() for line in exec_in(agent, "cat", "/proc/net/dev").splitlines()[2:]
        ]
        assert interfaces == ["lo"]
        assert exec_in(agent, "hostname").strip() == CONTAINER_HOSTNAME
        assert exec_in(agent, "getent", "hosts", CONTAINER_HOSTNAME).split()[0] == "127.0.0.1"
        config, hostconfig = sandbox.attrs["Config"], sandbox.attrs["HostConfig"]
        assert hostconfig["NetworkMode"] == "none"
        assert hostconfig["CapDrop"] == ["ALL"] and "no-new-privileges" in hostconfig["SecurityOpt"]
        assert hostconfig["ReadonlyRootfs"] is True and not sandbox.attrs["Mounts"]
        assert config["User"] not in ("", "0", "root") and not config["User"].startswith("0:")
        assert hostconfig["Memory"] > 0 and hostconfig["PidsLimit"] > 0 and hostconfig["NanoCpus"] > 0
        assert config["Labels"]["nanohost.installation"] == installation
        assert "nanohost.group" not in config["Labels"]  # not an agent: adoption never touches it

    # stopping the agent removes its namespace; the next start gets a fresh one, never that one
    used = team.labels[LABEL_JOINED]
    for runtime in list(host.orchestrator.runtimes.values()):
        if runtime.folder == "team":
            await runtime.stop("test")
    with pytest.raises(NotFound):
        docker_client.containers.get(used)
    assert await asyncio.to_thread(spares_ready, host)
    await cold_reply(host, "team", "again")
    assert agent_of(docker_client, settings, "team").labels[LABEL_JOINED] not in joined


async def test_a_dead_spare_makes_the_start_get_its_own_namespace(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    host, settings = await host_with_spares(tmp_path, start_host)
    (spare,) = sandboxes_of(docker_client, installation_id(settings))
    spare.kill()  # the engine restarted, say

    await cold_reply(host, "team", "after the spare died")  # claimed before any sweep saw it
    agent = agent_of(docker_client, settings, "team")
    assert agent.attrs["HostConfig"]["NetworkMode"] == "none"
    assert LABEL_JOINED not in agent.labels
    with pytest.raises(NotFound):
        docker_client.containers.get(spare.id)
    # a spare that died is also dropped by the next sweep, and replaced
    assert await asyncio.to_thread(spares_ready, host)
    (spare,) = sandboxes_of(docker_client, installation_id(settings))
    spare.kill()
    await host.app[BACKEND].tend()
    with pytest.raises(NotFound):
        docker_client.containers.get(spare.id)
    assert await asyncio.to_thread(spares_ready, host)
    await cold_reply(host, "team", "joins the new spare")
    assert agent_of(docker_client, settings, "team").labels[LABEL_JOINED] != spare.name


async def test_the_sweep_removes_a_crashed_hosts_spares_and_ended_agents_namespaces(
    tmp_path: Path, start_host: Any, docker_client: Any, agent_image: str
) -> None:
    settings = make_settings(tmp_path, spare_netns=1)
    add_group(settings, "team")
    installation = installation_id(settings)
    # a host that died without closing left a spare behind
    left_behind = leave_a_spare(docker_client, agent_image, installation, owner_of(settings.data_dir))

    host = await start_host(settings)
    await cold_reply(host, "team", "first")
    assert await asyncio.to_thread(spares_ready, host)
    await cold_reply(host, "team", "joins")
    agent = agent_of(docker_client, settings, "team")
    joined = agent.labels[LABEL_JOINED]
    agent.kill()  # the agent ended without the host stopping it (a crash)
    await host.app[BACKEND].tend()

    names = {c.name for c in sandboxes_of(docker_client, installation)}
    assert left_behind.name not in names and joined not in names
    assert await asyncio.to_thread(spares_ready, host)  # and the pool is full again
    assert len(sandboxes_of(docker_client, installation)) == 1


async def test_closing_the_backend_removes_its_spares_and_keeps_a_running_agents_namespace(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    host, settings = await host_with_spares(tmp_path, start_host)
    await cold_reply(host, "team", "joins")
    assert await asyncio.to_thread(spares_ready, host)
    joined = agent_of(docker_client, settings, "team").labels[LABEL_JOINED]
    installation = installation_id(settings)
    assert len(sandboxes_of(docker_client, installation)) == 2

    await host.client.close()  # the host stops; its agent keeps running for the next host to adopt
    assert [c.name for c in sandboxes_of(docker_client, installation)] == [joined]
    assert agent_of(docker_client, settings, "team").status == "running"


async def test_with_no_spares_the_sweep_still_removes_old_ones_but_never_a_data_dir_copys(
    tmp_path: Path, start_host: Any, docker_client: Any, agent_image: str
) -> None:
    settings = make_settings(tmp_path, spare_netns=0)
    installation = installation_id(settings)
    ours = leave_a_spare(docker_client, agent_image, installation, owner_of(settings.data_dir))
    # a host on a copy of this data dir has the same installation id, not the same data dir
    copys = leave_a_spare(docker_client, agent_image, installation, owner_of(tmp_path / "copy"))
    host = await start_host(settings)
    await host.app[BACKEND].tend()
    with pytest.raises(NotFound):
        docker_client.containers.get(ours.id)
    copys.reload()
    assert copys.status == "running"
