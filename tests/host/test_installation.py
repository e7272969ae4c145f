"""Installation ids: each data dir's host knows its own containers on a shared engine, and adopts,
stops and replaces only those. (Two real hosts on one real engine: tests/chaos.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from docker.errors import NotFound
from sqlalchemy import delete, select

from nanohost.app import ORCHESTRATOR, build_app
from nanohost.containers.backend import (
    LABEL_GROUP,
    LABEL_INSTALLATION,
    LABEL_SESSION,
    ContainerSpec,
    ContainerState,
    DockerBackend,
)
from nanohost.db import AgentSession, make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, Installation
from nanohost.groups import create_group
from nanohost.installation import installation_id
from nanohost.runtime import LABEL_LAYOUT
from nanohost.session_dir import LAYOUT
from nanohost.settings import Settings, load_settings
from nanohost.validation import InvalidInput
from tests.fakes.container_engine import RecordingBackend
from tests.support.host import installation_id as installation_of

AUTH = {"Authorization": "Bearer t"}


def settings_at(root: Path, **env: Any) -> Settings:
    return load_settings(data_dir=root / "data", groups_dir=root / "groups", api_token="t", **env)


def with_group(settings: Settings, name: str = "team") -> int:
    """Create a mock group and its shared session; the session's id."""
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        group = create_group(db, settings, name, provider="mock")
        session = AgentSession(group_id=group.id)
        db.add(session)
        db.flush()
        session_id = session.id
    engine.dispose()
    return session_id


def test_every_database_gets_its_own_id_and_it_is_made_again_when_missing(tmp_path: Path) -> None:
    one, two = settings_at(tmp_path / "one"), settings_at(tmp_path / "two")
    first = installation_of(one)
    assert len(first) == 12 and int(first, 16) >= 0
    assert installation_of(one) == first  # kept in the database
    assert installation_of(two) != first
    engine = make_engine(one.db_url)
    with transaction(make_session_factory(engine)) as db:
        db.execute(delete(Installation))
    with transaction(make_session_factory(engine)) as db:
        remade = installation_id(db)
    with transaction(make_session_factory(engine)) as db:
        assert db.scalars(select(Installation.installation_id)).all() == [remade]
    engine.dispose()
    assert remade != first


async def test_containers_carry_the_installation_in_label_and_name(host_env: Path) -> None:
    settings = settings_at(host_env, idle_timeout=1234)
    session_id = with_group(settings)
    own = installation_of(settings)
    fake = RecordingBackend()
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
        response = await client.post("/api/groups/team/messages", json={"text": "hi"}, headers=AUTH)
        assert response.status == 201
        async with asyncio.timeout(10):
            await fake.started.wait()
    (spec,) = fake.specs
    assert spec.name == f"nanohost-{own}-team-s{session_id}"
    assert spec.labels[LABEL_INSTALLATION] == own
    assert (spec.labels[LABEL_GROUP], spec.labels[LABEL_SESSION]) == ("team", str(session_id))
    runner = json.loads((settings.sessions_dir / str(session_id) / "runner.json").read_text())
    assert runner["host_away_timeout"] == 1234  # the runner learns how long the host may be away


async def test_adoption_and_orphan_clean_up_touch_only_this_installations_containers(
    host_env: Path,
) -> None:
    settings = settings_at(host_env)
    session_id = with_group(settings)
    own = installation_of(settings)
    mine = str(settings.sessions_dir / str(session_id))
    elsewhere = str(host_env / "other-host" / "data" / "sessions" / str(session_id))

    def state(cid: str, installation: str | None, session: int, mount: str) -> ContainerState:
        labels = {LABEL_GROUP: "team", LABEL_SESSION: str(session), LABEL_LAYOUT: LAYOUT}
        if installation is not None:
            labels[LABEL_INSTALLATION] = installation
        return ContainerState(cid, cid, running=True, labels=labels, mounts=(mount,))

    fake = RecordingBackend(
        listed=[
            state("own", own, session_id, mine),
            state("own-orphan", own, 999, mine),
            state("theirs", "0123456789ab", session_id, elsewhere),
            state("their-orphan", "0123456789ab", 999, elsewhere),
            state("older-host-here", None, session_id, mine),
            state("older-host-elsewhere", None, 999, elsewhere),
            state("own-id-but-a-copied-data-dir", own, session_id, elsewhere),
        ],
        running={"own"},
    )
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
        orchestrator = client.app[ORCHESTRATOR]
        assert orchestrator.runtimes[session_id].container_id == "own"
    assert sorted(fake.stopped) == ["older-host-here", "own-orphan"]


class _Container:
    def __init__(self, installation: str | None, status: str, mount: str = "/srv/data/sessions/1") -> None:
        self.labels = {LABEL_GROUP: "team"} | ({LABEL_INSTALLATION: installation} if installation else {})
        self.status = status
        self.id = self.name = "old"
        self.attrs = {"Config": {"Labels": self.labels}, "Mounts": [{"Source": mount}], "State": {}}
        self.done: list[str] = []

    def stop(self, timeout: int) -> None:
        self.done.append("stop")

    def remove(self, force: bool) -> None:
        self.done.append("remove")


class _Client:
    """Just enough of the docker SDK's client for ``DockerBackend._run``."""

    def __init__(self, existing: _Container | None) -> None:
        self.existing = existing
        self.started: list[str] = []
        self.containers = self
        self.api = self
        self._created: dict[str, str] = {}

    def get(self, name: str) -> Any:
        if name.startswith("nanohost-") and self.existing is None:
            raise NotFound("no such container")
        return self.existing

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs

    def create_container(self, image: str, **kwargs: Any) -> dict[str, str]:
        self._created["new"] = kwargs["name"]
        return {"Id": "new"}

    def start(self, container_id: str) -> None:
        self.started.append(self._created[container_id])


def _spec(installation: str) -> ContainerSpec:
    return ContainerSpec(
        name=f"nanohost-{installation}-team-s1",
        image="img",
        mounts=[],
        labels={LABEL_GROUP: "team", LABEL_INSTALLATION: installation},
    )


@pytest.mark.parametrize("theirs", ["0123456789ab", None])
def test_a_name_taken_by_another_installation_is_refused_and_left_alone(theirs: str | None) -> None:
    taken = _Container(theirs, "running")
    client = _Client(taken)
    with pytest.raises(InvalidInput, match="did not start"):
        DockerBackend(client, installation="aaaaaaaaaaaa")._run(_spec("aaaaaaaaaaaa"))
    assert taken.done == [] and client.started == []


def test_a_name_taken_by_this_installation_is_replaced_cleanly() -> None:
    """Still running from before: it was started with a gateway grant this start has replaced."""
    old = _Container("aaaaaaaaaaaa", "running")
    client = _Client(old)
    backend = DockerBackend(client, installation="aaaaaaaaaaaa", data_dir=Path("/srv/data"))
    assert backend._run(_spec("aaaaaaaaaaaa")) == "new"
    assert old.done == ["stop", "remove"]
    assert client.started == ["nanohost-aaaaaaaaaaaa-team-s1"]


def test_a_name_taken_by_a_copy_of_this_data_dir_is_refused_and_left_alone() -> None:
    old = _Container("aaaaaaaaaaaa", "running", mount="/srv/copy/sessions/1")
    client = _Client(old)
    backend = DockerBackend(client, installation="aaaaaaaaaaaa", data_dir=Path("/srv/data"))
    with pytest.raises(InvalidInput, match="mounts another data dir"):
        backend._run(_spec("aaaaaaaaaaaa"))
    assert old.done == [] and client.started == []


def test_setup_prints_the_installation_id(host_env: Path) -> None:
    from typer.testing import CliRunner

    from nanohost.cli import app

    result = CliRunner().invoke(app, ["setup", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["installation"]
    assert shown == installation_of(load_settings())
    engine = make_engine(load_settings().db_url)
    with transaction(make_session_factory(engine)) as db:
        assert db.scalar(select(AgentGroup.name)) == "main"
    engine.dispose()
