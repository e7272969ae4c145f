"""The provider registry: providers come from entry points, a third-party package adds one without
touching nanohost, and a name nothing registers is refused where it is used, saying what is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_runner.config import ConfigError, Paths, RunnerConfig
from agent_runner.registry import build as build_runner_side
from aiohttp import ClientSession, UnixConnector
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from typer.testing import CliRunner

from nanohost.app import ORCHESTRATOR, build_app
from nanohost.cli import app as cli_app
from nanohost.db import AgentSession, make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup
from nanohost.groups import create_group, delete_group
from nanohost.providers import registry
from nanohost.settings import Settings, load_settings
from nanohost.validation import InvalidInput
from tests.fakes.container_engine import RecordingBackend

AUTH = {"Authorization": "Bearer t"}

THIRD_PARTY = """
from pathlib import Path

from nanohost.providers import Contribution, GroupSpec


class ParrotHost:
    name = "parrot"
    summary = "repeats you (a third-party test provider)"
    runner = "parrot_agent:build"
    routes = frozenset({("POST", "/v1/chat/completions")})

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.data_dir)

    def prepare(self, group: GroupSpec) -> Contribution:
        self.state_dir(group.folder).mkdir(parents=True, exist_ok=True)
        return Contribution(mounts=[], runner={"options": {"voice": "squawk"}})

    def state_dir(self, folder: str) -> Path:
        return self.data_dir / "parrot" / folder


def build(config, paths, base_url):
    from agent_runner.mock import MockProvider

    provider = MockProvider()
    provider.name = "parrot:" + config.options["voice"]
    return provider
"""


@pytest.fixture
def clean_registry() -> Iterator[None]:
    registry.names.cache_clear()
    registry.get.cache_clear()
    yield
    registry.names.cache_clear()
    registry.get.cache_clear()


@pytest.fixture
def parrot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_registry: None) -> None:
    """An installed third-party distribution that registers the ``parrot`` provider."""
    site = tmp_path / "site"
    dist = site / "parrot_agent-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: parrot-agent\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nanohost.providers]\nparrot = parrot_agent:ParrotHost\n")
    (site / "parrot_agent.py").write_text(THIRD_PARTY)
    monkeypatch.syspath_prepend(str(site))


def settings_at(root: Path) -> Settings:
    return load_settings(data_dir=root / "data", groups_dir=root / "groups", api_token="t")


def with_group(settings: Settings, provider: str) -> int:
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        group = create_group(db, settings, "team", provider=provider)
        session = AgentSession(group_id=group.id)
        db.add(session)
        db.flush()
        session_id = session.id
    engine.dispose()
    return session_id


def test_the_built_in_providers_are_registered_like_any_other(clean_registry: None) -> None:
    assert {"codex", "mock"} <= set(registry.names())
    for name in registry.names():
        host = registry.get(name)
        assert host.name == name and host.summary
        assert all(path.startswith("/v1/") for _, path in host.routes)
    assert registry.uses_model("codex") and not registry.uses_model("mock")


def test_a_third_party_package_adds_a_provider_everywhere(
    parrot: None, host_env: Path, tmp_path: Path
) -> None:
    assert "parrot" in registry.names()
    assert registry.check_provider("Parrot") == "parrot"
    help_text = CliRunner().invoke(cli_app, ["groups", "create", "--help"], terminal_width=200).output
    assert "parrot" in help_text and "codex" in help_text
    created = CliRunner().invoke(cli_app, ["groups", "create", "birds", "--provider", "parrot"])
    assert created.exit_code == 0, created.output
    assert "provider parrot" in created.output
    refused = CliRunner().invoke(cli_app, ["groups", "create", "fish", "--provider", "carp"])
    assert refused.exit_code != 0 and "unknown provider 'carp'" in refused.output
    assert "parrot" in refused.output  # the error names what is registered
    doctor = CliRunner().invoke(cli_app, ["doctor", "--json"])
    assert "repeats you (a third-party test provider)" in doctor.output
    # the runner side is imported from the module path runner.json names, nothing else
    paths = Paths(session=tmp_path, workspace=tmp_path, codex_home=tmp_path)
    config = RunnerConfig.from_dict(
        {"provider": "parrot", "runner": "parrot_agent:build", "options": {"voice": "squawk"}}
    )
    assert build_runner_side(config, paths, "").name == "parrot:squawk"


def test_a_runner_side_missing_from_the_image_is_a_config_error(tmp_path: Path) -> None:
    paths = Paths(session=tmp_path, workspace=tmp_path, codex_home=tmp_path)
    with pytest.raises(ConfigError, match="not installed in this image"):
        build_runner_side(RunnerConfig(provider="gone", runner="gone_agent:build"), paths, "")
    with pytest.raises(ConfigError, match="runner must be"):
        RunnerConfig.from_dict({"provider": "mock", "runner": "os; rm -rf /"})


async def _gateway_status(socket: Path, placeholder: str, path: str) -> int:
    async with ClientSession(connector=UnixConnector(path=str(socket))) as client:
        response = await client.post(
            f"http://gateway{path}", data=b"{}", headers={"Authorization": f"Bearer {placeholder}"}
        )
        return response.status


async def test_a_wake_uses_the_providers_runner_side_state_and_routes(parrot: None, host_env: Path) -> None:
    settings = settings_at(host_env)
    session_id = with_group(settings, "parrot")
    fake = RecordingBackend()
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
        response = await client.post("/api/groups/team/messages", json={"text": "hi"}, headers=AUTH)
        assert response.status == 201
        async with asyncio.timeout(10):
            await fake.started.wait()
        runner: dict[str, Any] = json.loads(
            (settings.sessions_dir / str(session_id) / "runner.json").read_text()
        )
        assert runner["provider"] == "parrot" and runner["runner"] == "parrot_agent:build"
        assert runner["options"] == {"voice": "squawk"} and runner["gateway_socket"]
        socket = settings.data_dir / "gateway" / "gateway.sock"
        # its own call is forwarded (no key here: 401 from the gateway, past the path check) …
        assert await _gateway_status(socket, runner["placeholder"], "/v1/chat/completions") == 401
        # … Codex's is not: the grant carries the parrot's routes
        assert await _gateway_status(socket, runner["placeholder"], "/v1/responses") == 403
    assert (settings.data_dir / "parrot" / "team").is_dir()
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        delete_group(db, settings, "team", keep_files=False)
    engine.dispose()
    assert not (settings.data_dir / "parrot" / "team").exists()  # its state goes with the group


async def test_a_mock_wake_gets_no_gateway_port_and_no_model_route(host_env: Path) -> None:
    settings = settings_at(host_env)
    session_id = with_group(settings, "mock")
    fake = RecordingBackend()
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
        response = await client.post("/api/groups/team/messages", json={"text": "hi"}, headers=AUTH)
        assert response.status == 201
        async with asyncio.timeout(10):
            await fake.started.wait()
        runner = json.loads((settings.sessions_dir / str(session_id) / "runner.json").read_text())
        assert runner["runner"] == "agent_runner.mock:build" and runner["gateway_socket"] is None
        socket = settings.data_dir / "gateway" / "gateway.sock"
        assert await _gateway_status(socket, runner["placeholder"], "/v1/responses") == 403


async def test_a_stored_provider_nothing_registers_fails_the_wake_saying_why(host_env: Path) -> None:
    settings = settings_at(host_env)
    session_id = with_group(settings, "mock")
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:  # written behind the CLI's back
        db.scalars(select(AgentGroup)).one().agent_provider = "vanished"
    engine.dispose()
    fake = RecordingBackend()
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
        runtime = await client.app[ORCHESTRATOR].runtime(session_id)
        with pytest.raises(InvalidInput) as refused:
            await runtime.wake()
        error = str(refused.value)
        with transaction(client.app[ORCHESTRATOR].ctx.db) as db:
            session = db.get(AgentSession, session_id)
            assert session is not None and session.last_error is not None
            assert "unknown provider 'vanished'" in session.last_error
    assert fake.specs == []  # nothing was started
    assert "unknown provider 'vanished'" in error and "registered providers: codex" in error
    why = CliRunner().invoke(cli_app, ["why", "team"])
    assert "unknown provider 'vanished'" in why.output


def test_the_readme_table_has_a_row_for_every_registered_provider(clean_registry: None) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("<!-- providers-table:", 1)[1].split("\n\n", 1)[0]
    rows = {line.split("|")[1].strip().strip("`") for line in table.splitlines() if line.startswith("| `")}
    assert rows == set(registry.names())
