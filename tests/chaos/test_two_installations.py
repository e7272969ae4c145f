"""Two installations (two data dirs, two hosts) on one Docker engine, side by side: each answers
its own groups, and neither adopts, stops nor removes the other's containers, not even when one
restarts and finds the other's containers with the same group folder and session ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.host import add_group, containers_of, installation_id, make_settings

pytestmark = [pytest.mark.chaos, pytest.mark.docker]


async def test_two_installations_on_one_engine_keep_to_their_own(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    a, b = make_settings(tmp_path / "a"), make_settings(tmp_path / "b")
    add_group(a, "team")  # the same folder on both: session 1 of each is "team"
    add_group(b, "team")
    add_group(b, "extra")  # B's session 2, which A does not have: an "orphan" in A's eyes
    id_a, id_b = installation_id(a), installation_id(b)
    assert id_a != id_b

    host_a, host_b = await start_host(a), await start_host(b)
    sent = {
        "a": await host_a.send("team", "from a"),
        "b": await host_b.send("team", "from b"),
        "x": await host_b.send("extra", "extra b"),
    }
    assert [r["text"] for r in await host_a.replies_after("team", sent["a"])] == ["echo: from a"]
    assert [r["text"] for r in await host_b.replies_after("team", sent["b"])] == ["echo: from b"]
    assert [r["text"] for r in await host_b.replies_after("extra", sent["x"])] == ["echo: extra b"]
    (team_a,) = containers_of(docker_client, a)
    b_ids = sorted(c.id for c in containers_of(docker_client, b))
    assert team_a.name == f"nanohost-{id_a}-team-s1" and len(b_ids) == 2
    assert all(c.name.startswith(f"nanohost-{id_b}-") for c in containers_of(docker_client, b))

    await host_a.client.close()  # A stops; its container keeps running, to be adopted
    host_a = await start_host(a)
    (runtime_a,) = host_a.orchestrator.runtimes.values()
    assert runtime_a.container_id == team_a.id  # A adopted its own...
    for container in containers_of(docker_client, b):  # ...and left B's running, untouched
        container.reload()
        assert container.status == "running", container.name
    assert sorted(c.id for c in containers_of(docker_client, b)) == b_ids
    assert {r.container_id for r in host_b.orchestrator.runtimes.values()} == set(b_ids)

    again_a = await host_a.send("team", "a again")
    again_b = await host_b.send("team", "b again")
    assert [r["text"] for r in await host_a.replies_after("team", again_a)] == ["echo: a again"]
    assert [r["text"] for r in await host_b.replies_after("team", again_b)] == ["echo: b again"]
    assert [c.id for c in containers_of(docker_client, a)] == [team_a.id]
    assert sorted(c.id for c in containers_of(docker_client, b)) == b_ids
