"""The admin CLI through its real entry point, against a temp data dir.

Refusals are checked three ways: the one-line message, the non-zero exit, and that neither the
database nor the disk changed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from nanohost import cli as cli_module
from nanohost.cli import app
from nanohost.db import AgentGroup, AgentSession, Message, make_engine, make_session_factory
from nanohost.db.engine import transaction
from nanohost.limits import EngineResources
from nanohost.settings import Settings, load_settings

Run = Callable[..., "Result"]


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> object:
        return json.loads(self.stdout)


ENGINE = EngineResources(cpus=2, memory=4 * 1024**3)
"""What the Docker engine has, as far as these tests are concerned (not this machine's size)."""


@pytest.fixture
def engine_asked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pins the engine's figures to ``ENGINE``; records each time they are asked for."""
    asked: list[int] = []

    def fake_engine() -> EngineResources:
        asked.append(1)
        return ENGINE

    monkeypatch.setattr(cli_module, "engine_resources", fake_engine)
    return asked


@pytest.fixture
def cli(host_env: Path, monkeypatch: pytest.MonkeyPatch, engine_asked: list[int]) -> Run:
    monkeypatch.setenv("COLUMNS", "200")  # as the real entry point sets for piped output
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        outcome = Result(result.exit_code, result.stdout, result.stderr)
        if ok:
            assert outcome.code == 0, f"{args} failed: {outcome.stdout}{outcome.stderr}"
        return outcome

    return run


@pytest.fixture
def ready(cli: Run) -> Run:
    cli("setup")
    return cli


def snapshot(root: Path) -> tuple[list[str], dict[str, object]]:
    """Files on disk plus the content of every table: what a refusal must leave untouched."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if "data" not in p.parts)
    engine = make_engine(load_settings().db_url)
    tables = {}
    with engine.connect() as connection:
        for table in ("agent_groups", "container_configs", "chat_bindings", "sessions", "messages"):
            rows = connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id").all()
            tables[table] = [tuple(row) for row in rows]
    engine.dispose()
    return files, tables


def refused(run: Run, root: Path, *args: str, says: str) -> None:
    before = snapshot(root)
    result = run(*args, ok=False)
    assert result.code != 0
    assert says in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, f"one line expected: {result.stderr!r}"
    assert snapshot(root) == before


def test_console_script_runs(host_env: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nanohost.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.startswith("nanohost ")
    help_text = subprocess.run(
        [sys.executable, "-m", "nanohost.cli", "--help"], capture_output=True, text=True
    )
    for command in ("setup", "groups", "bind", "sessions", "messages", "status", "doctor", "db", "image"):
        assert command in help_text.stdout


def test_setup_is_idempotent_and_uses_mock_without_a_key(cli: Run, host_env: Path) -> None:
    first = cli("setup")
    assert "mock" in first.stdout and "--provider codex" in first.stdout
    second = cli("setup")
    assert "created group" not in second.stdout
    groups = cli("groups", "list", "--json").json()
    assert [(g["name"], g["provider"], g["chats"]) for g in groups] == [("main", "mock", 1)]
    assert (host_env / "groups" / "main" / "memory" / "index.md").is_file()
    assert (host_env / "groups" / "main" / "memory" / "system" / "definition.md").is_file()
    assert (host_env / "groups" / "main" / "conversations").is_dir()
    assert (host_env / "groups" / "main" / "skills").is_dir()
    assert not list((host_env / "groups" / "main").rglob(".gitkeep"))


def test_setup_uses_codex_when_a_key_is_configured(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cli("setup")
    assert cli("groups", "show", "main", "--json").json()["provider"] == "codex"


def test_setup_never_overwrites_group_files(cli: Run, host_env: Path) -> None:
    cli("setup")
    index = host_env / "groups" / "main" / "memory" / "index.md"
    index.write_text("my memories")
    cli("setup")
    assert index.read_text() == "my memories"


def test_bad_settings_are_named(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOHOST_WEB_PORT", "eighty")
    result = cli("groups", "list", ok=False)
    assert result.code == 1
    assert "NANOHOST_WEB_PORT" in result.stderr


def test_groups_create_show_list_delete(ready: Run, host_env: Path) -> None:
    ready("groups", "create", "Team-A", "--provider", "CODEX")
    shown = ready("groups", "show", "Team-A", "--json").json()
    assert shown["folder"] == "team-a" and shown["provider"] == "codex"
    assert (host_env / "groups" / "team-a" / "memory" / "index.md").is_file()
    ready("groups", "create", "b", "--folder", "bee")
    assert {g["name"] for g in ready("groups", "list", "--json").json()} == {"main", "Team-A", "b"}
    table = ready("groups", "list").stdout
    assert "Team-A" in table and "bee" in table
    ready("groups", "delete", "b", "--keep-files")
    assert (host_env / "groups" / "bee").is_dir()
    ready("groups", "delete", "Team-A")
    assert not (host_env / "groups" / "team-a").exists()
    assert {g["name"] for g in ready("groups", "list", "--json").json()} == {"main"}
    # a kept folder is adopted by a new group with that folder, its files untouched
    (host_env / "groups" / "bee" / "notes.txt").write_text("keep me")
    ready("groups", "create", "bee")
    assert (host_env / "groups" / "bee" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("groups", "create", "../evil"), "path separator"),
        (("groups", "create", ".hidden"), "start with a dot"),
        (("groups", "create", "x" * 65), "longer than 64"),
        (("groups", "create", "ok", "--folder", "a/../b"), "path separator"),
        (("groups", "create", "ok", "--folder", ".."), "'..'"),
        (("groups", "create", "ok", "--folder", "templates"), "reserved"),
        (("groups", "create", "ok", "--provider", "gpt"), "unknown provider"),
        (("groups", "create", "main"), "already exists"),
        (("groups", "create", "Main2", "--folder", "main"), "already belongs to group 'main'"),
        (("groups", "show", "nope"), "no group named 'nope'"),
        (("groups", "delete", "nope"), "no group named 'nope'"),
        (("groups", "config", "nope", "--model", "m"), "no group named 'nope'"),
    ],
)
def test_group_refusals_change_nothing(ready: Run, host_env: Path, args: tuple[str, ...], says: str) -> None:
    refused(ready, host_env, *args, says=says)


def test_config_changes_and_effective_config(ready: Run) -> None:
    result = ready(
        "groups",
        "config",
        "main",
        "--model",
        "gpt-5.5",
        "--effort",
        "HIGH",
        "--provider",
        "codex",
        "--env",
        "TZ=Europe/Paris",
        "--env",
        "MODE=fast",
        "--mcp-add",
        "db",
        "--command",
        "nanohost-mcp-sqlite",
        "--arg",
        "records.db",
        "--instructions",
        "Use db.",
        "--memory",
        "2G",
        "--cpus",
        "1.5",
        "--pids",
        "128",
        "--allow-sender",
        "alice",
        "--allow-sender",
        "bob",
        "--engage",
        "trigger",
        "--trigger",
        "@bot",
        "--skill",
        "write-report",
    )
    assert "next idle" in result.stdout
    config = ready("groups", "show", "main", "--json").json()
    assert config["model"] == "gpt-5.5"
    assert config["reasoning_effort"] == "high"
    assert config["provider"] == "codex"
    assert config["env"] == {"TZ": "Europe/Paris", "MODE": "fast"}
    assert config["mcp_servers"] == {
        "db": {"command": "nanohost-mcp-sqlite", "args": ["records.db"], "env": {}, "instructions": "Use db."}
    }
    assert (config["memory"], config["cpus"], config["pids"]) == ("2g", 1.5, 128)
    assert config["allowed_senders"] == ["alice", "bob"]
    assert (config["engage"], config["trigger"]) == ("trigger", "@bot")
    assert config["skills"] == ["write-report"]

    ready(
        "groups",
        "config",
        "main",
        "--unset-env",
        "MODE",
        "--mcp-remove",
        "db",
        "--deny-sender",
        "alice",
        "--no-skill",
        "write-report",
        "--engage",
        "mention",
    )
    config = ready("groups", "show", "main", "--json").json()
    assert config["env"] == {"TZ": "Europe/Paris"}
    assert config["mcp_servers"] == {}
    assert config["allowed_senders"] == ["bob"]
    assert config["skills"] == []
    assert config["engage"] == "mention"


def test_defaults_show_through_until_set(ready: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOHOST_CONTAINER_MEMORY", "3g")
    config = ready("groups", "show", "main", "--json").json()
    assert config["memory"] == "3g"
    assert config["allowed_senders"] == "everyone"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--effort", "turbo"), "unknown reasoning effort 'turbo'"),
        (("--model", "ok", "--effort", "ultra"), "unknown reasoning effort"),  # valid parts don't land either
        (("--env", "OPENAI_API_KEY=sk-x"), "looks like a credential"),
        (("--env", "GH_TOKEN=x"), "looks like a credential"),
        (("--env", "APIKEY=x"), "env name 'APIKEY' looks like a credential"),
        (("--env", "AUTHORIZATION=Bearer x"), "env name 'AUTHORIZATION' looks like a credential"),
        (("--env", "TZ=UTC", "--env", "LD_PRELOAD=/tmp/x.so"), "env name 'LD_PRELOAD' is reserved"),
        (("--env", "PYTHONSTARTUP=/tmp/x.py"), "env name 'PYTHONSTARTUP' is reserved"),
        (("--env", "https_proxy=http://evil:8080"), "env name 'https_proxy' is reserved"),
        (("--env", "NANOHOST_SESSION_DIR=/tmp"), "env name 'NANOHOST_SESSION_DIR' is reserved"),
        (("--env", "A-B=x"), "env name 'A-B' must be letters"),
        (("--env", "MODE=a\x00b"), "value of MODE must not contain a NUL byte"),
        (("--env", "MODE=" + "x" * 4097), "value of MODE is longer than 4096 characters"),
        (("--env", "NOEQUALS"), "NAME=VALUE"),
        (("--env", "1BAD=x"), "env name"),
        (("--unset-env", "NEVER_SET"), "is not set"),
        (("--mcp-add", "bad name", "--command", "x"), "MCP server name"),
        (("--mcp-add", "fs"), "needs --command"),
        (("--command", "x"), "go with --mcp-add"),
        (("--mcp-remove", "ghost"), "no MCP server 'ghost'"),
        (("--memory", "lots"), "not a memory size"),
        (("--cpus", "0"), "--cpus"),
        (("--cpus", "nan"), "--cpus nan must be between 0.01 and 256"),
        (("--cpus", "64"), "--cpus 64 is more than the 2 CPUs the Docker engine has"),
        (("--memory", "999999g"), "--memory 999999g is more than the 4g of memory the Docker engine has"),
        (("--model", "ok", "--memory", "5g"), "--memory 5g is more than the 4g"),  # nothing else lands
        (("--pids", "5"), "--pids"),
        (("--pids", "0"), "--pids 0 must be between 16 and 65536"),
        (("--pids", "-1"), "--pids -1 must be between 16 and 65536"),
        (("--pids", "99999999"), "--pids 99999999 must be between 16 and 65536"),
        (("--disk-quota", "lots"), "--disk-quota: 'lots' is not a memory size"),
        (("--model", "ok", "--disk-quota", "-1g"), "--disk-quota"),  # nothing else lands
        (("--deny-sender", "stranger"), "not on group 'main''s allow-list"),
        (("--engage", "sometimes"), "unknown engage mode"),
        (("--engage", "trigger"), "needs --trigger"),
        (("--trigger", "two words"), "one word"),
        (("--skill", "../x"), "path separator"),
        (("--skill", "pdf"), "unknown skill 'pdf'; the shared skills are: schedule-reminders, summarize"),
        (("--mcp-add", "fs", "--command", "npx", "--arg", "-y"), "--command 'npx' is not in the agent image"),
        (("--mcp-add", "fs", "--command", "/usr/bin/node"), "not in the agent image"),
        (("--mcp-add", "fs", "--command", "/workspace/agent/../../bin/x"), "not in the agent image"),
        (("--no-skill", "never"), "is not selected"),
        (("--model", "line1\nline2"), "single line"),
        (("--allow-egress", "http://x.com"), "egress pattern"),
        (("--allow-egress", "a b"), "egress pattern"),
        (("--deny-egress", "never.com"), "not on group 'main''s egress allow-list"),
    ],
)
def test_config_refusals_change_nothing(ready: Run, host_env: Path, args: tuple[str, ...], says: str) -> None:
    refused(ready, host_env, "groups", "config", "main", *args, says=says)


def test_a_groups_own_disk_quota_is_set_shown_and_given_back_to_the_host_default(
    ready: Run, host_env: Path
) -> None:
    assert ready("groups", "show", "main", "--json").json()["disk_quota"] == "10g"  # the host's
    result = ready("groups", "config", "main", "--disk-quota", "50G")
    assert "disk quota = 50g" in result.stdout
    assert "next idle" not in result.stdout  # checked by the host, no new container needed
    assert ready("groups", "show", "main", "--json").json()["disk_quota"] == "50g"
    ready("groups", "config", "main", "--disk-quota", "0")
    assert ready("groups", "show", "main", "--json").json()["disk_quota"] == "0"
    assert "the host default" in ready("groups", "config", "main", "--disk-quota", "default").stdout
    assert ready("groups", "show", "main", "--json").json()["disk_quota"] == "10g"


def test_config_without_options_shows_the_config(ready: Run) -> None:
    assert "nanohost-agent:0.138.0" in ready("groups", "config", "main").stdout


def test_the_readme_config_example_works_as_written(ready: Run) -> None:
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("nanohost groups config NAME")
    lines = []
    for line in readme[start:].splitlines():
        lines.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    args = shlex.split(" ".join(lines))[1:]
    ready(*[("main" if a == "NAME" else a) for a in args])
    config = ready("groups", "show", "main", "--json").json()
    assert config["mcp_servers"]["db"]["command"] == "nanohost-mcp-sqlite"
    assert config["skills"] == ["write-report"]


def test_skills_list_shows_the_shipped_skills(cli: Run) -> None:
    skills = cli("skills", "list", "--json").json()
    names = [s["name"] for s in skills]
    assert names == ["schedule-reminders", "summarize-files", "write-report"]
    assert all(len(s["description"]) > 40 for s in skills)  # each says what it is for
    table = cli("skills", "list").stdout
    assert all(name in table for name in names)


@pytest.mark.parametrize(
    "command",
    [
        "nanohost-mcp-sqlite",
        "/usr/local/bin/nanohost-mcp-sqlite",
        "/opt/venv/bin/python",
        "python3",
        "/workspace/agent/tools/server.py",
    ],
)
def test_mcp_commands_the_image_has_are_accepted(ready: Run, command: str) -> None:
    ready("groups", "config", "main", "--mcp-add", "tool", "--command", command)
    assert ready("groups", "show", "main", "--json").json()["mcp_servers"]["tool"]["command"] == command


def test_bind_and_unbind(ready: Run, host_env: Path) -> None:
    ready("groups", "create", "other")
    ready("bind", "telegram", "-1001234", "main", "--session", "per-chat")
    assert "telegram:-1001234 (per-chat)" in ready("groups", "show", "main", "--json").json()["chats"]
    ready("bind", "telegram", "-1001234", "main", "--session", "per-chat")  # same binding again is fine
    refused(ready, host_env, "bind", "telegram", "-1001234", "other", says="already bound to group 'main'")
    refused(ready, host_env, "bind", "irc", "#x", "main", says="unknown channel 'irc'")
    refused(ready, host_env, "bind", "slack", "C 1", "main", says="chat id")
    refused(
        ready, host_env, "bind", "slack", "C1", "main", "--session", "private", says="unknown session mode"
    )
    refused(ready, host_env, "bind", "slack", "C1", "ghost", says="no group named 'ghost'")
    ready("unbind", "telegram", "-1001234")
    refused(ready, host_env, "unbind", "telegram", "-1001234", says="is not bound")
    ready("bind", "telegram", "-1001234", "other")
    assert "telegram:-1001234 (shared)" in ready("groups", "show", "other", "--json").json()["chats"]


def _add_rows(host_env: Path) -> None:
    engine = make_engine(load_settings().db_url)
    with transaction(make_session_factory(engine)) as session:
        group = session.scalar(select(AgentGroup).where(AgentGroup.name == "main"))
        assert group is not None
        agent_session = AgentSession(
            group=group,
            continuation="thread-1",
            status="failed",
            crash_count=3,
            last_error="container exited 1",
        )
        session.add(agent_session)
        session.flush()
        for i in range(5):
            session.add(
                Message(
                    group_id=group.id,
                    session_id=agent_session.id,
                    direction="in" if i % 2 == 0 else "out",
                    channel="web",
                    chat_id="main",
                    sender="alice",
                    text=f"message {i}",
                    status="failed" if i == 3 else "delivered",
                )
            )
    engine.dispose()


def test_sessions_messages_and_status(ready: Run, host_env: Path) -> None:
    _add_rows(host_env)
    sessions = ready("sessions", "list", "main", "--json").json()
    assert [(s["status"], s["thread"], s["crashes"]) for s in sessions] == [("failed", "thread-1", 3)]
    status = ready("status", "--json").json()
    assert status[0]["group"] == "main" and status[0]["session"] == "failed"
    assert status[0]["last_error"] == "container exited 1"
    assert status[0]["undelivered"] == 1
    assert "container exited 1" in ready("status").stdout
    tail = ready("messages", "tail", "main", "-n", "3", "--json").json()
    assert [m["text"] for m in tail] == ["message 2", "message 3", "message 4"]
    assert "message 4" in ready("messages", "tail", "main").stdout
    ready("sessions", "reset", "main")
    sessions = ready("sessions", "list", "--json").json()
    # the old session (and its thread) is kept; a fresh one with no thread takes over
    assert [(s["thread"], s["crashes"]) for s in sessions] == [("thread-1", 0), (None, 0)]
    assert sessions[1]["status"] == "idle" and sessions[1]["last_error"] is None
    refused(ready, host_env, "messages", "tail", "ghost", says="no group named 'ghost'")
    refused(ready, host_env, "sessions", "reset", "ghost", says="no group named 'ghost'")
    assert ready("messages", "tail", "main", "-n", "0", ok=False).code == 2


def test_status_shows_the_wake_queue_from_the_database(ready: Run) -> None:
    """Sessions with unanswered messages and no running container wait for a wake; a running
    one (mid-turn) and a failed one (paused) do not."""
    from datetime import timedelta

    from nanohost.db.models import utcnow

    ready("groups", "create", "busy", "--provider", "mock")
    ready("groups", "create", "broken", "--provider", "mock")
    engine = make_engine(load_settings().db_url)
    with transaction(make_session_factory(engine)) as db:
        waits = (("main", "stopped", 90), ("busy", "running", 300), ("broken", "failed", 600))
        for name, state, age in waits:
            group = db.scalar(select(AgentGroup).where(AgentGroup.name == name))
            assert group is not None
            agent_session = AgentSession(group=group, status=state)
            db.add(agent_session)
            db.flush()
            db.add(
                Message(
                    group_id=group.id,
                    session_id=agent_session.id,
                    direction="in",
                    channel="api",
                    chat_id=name,
                    text="hello",
                    status="queued",
                    created_at=utcnow() - timedelta(seconds=age),
                )
            )
    engine.dispose()
    rows = {row["group"]: row for row in ready("status", "--json").json()}
    assert 90 <= rows["main"]["waiting_s"] < 150
    assert rows["busy"]["waiting_s"] is None and rows["broken"]["waiting_s"] is None
    table = ready("status").stdout
    assert "wake queue: 1 session(s) with unanswered messages and no running container" in table
    oldest = re.search(r"the oldest has waited (\d+) s", table)
    assert oldest is not None and 90 <= int(oldest[1]) < 150


def test_db_commands(cli: Run) -> None:
    current = cli("db", "current", "--json").json()
    assert current["current"] is None and current["at_head"] is False
    assert "was empty" in cli("db", "upgrade").stdout
    current = cli("db", "current", "--json").json()
    assert current["at_head"] is True and current["current"] == current["head"]


def test_doctor_says_what_to_fix(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = cli("doctor", "--json", ok=False)
    assert result.code == 1
    checks = {c["name"]: c for c in result.json()}
    assert checks["data dir"]["ok"] is True
    assert checks["database"]["ok"] is False and "nanohost setup" in checks["database"]["detail"]
    assert checks["docker engine"]["ok"] is False and "dockerd" in checks["docker engine"]["detail"]
    assert (
        checks["model credential"]["ok"] is False and "OPENAI_API_KEY" in checks["model credential"]["detail"]
    )
    cli("setup")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    checks = {c["name"]: c for c in cli("doctor", "--json", ok=False).json()}
    assert checks["database"]["ok"] is True
    assert checks["model credential"]["ok"] is True
    assert "sk-test" not in json.dumps(checks)


def test_routing_edits_say_they_apply_from_the_next_message(ready: Run) -> None:
    result = ready("groups", "config", "main", "--allow-sender", "telegram:@alice", "--engage", "mention")
    assert "applies from the next message" in result.stdout
    assert "next idle" not in result.stdout
    assert "next idle" in ready("groups", "config", "main", "--memory", "512m").stdout


def test_limits_up_to_the_engines_pass_and_only_limits_ask_the_engine(
    ready: Run, engine_asked: list[int]
) -> None:
    ready("groups", "config", "main", "--model", "gpt-5.5", "--pids", "65536")
    assert engine_asked == []  # nothing to compare: the engine is not asked
    ready("groups", "config", "main", "--memory", "4g", "--cpus", "2")
    assert engine_asked == [1]
    config = ready("groups", "show", "main", "--json").json()
    assert (config["memory"], config["cpus"], config["pids"]) == ("4g", 2, 65536)


def _write_env_row(env_json: str) -> None:
    """Write the env column by other means than the CLI (plain SQL, no ORM checks)."""
    engine = make_engine(load_settings().db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE container_configs SET env = ?", (env_json,))
    engine.dispose()


def test_a_bad_env_row_written_by_other_means_is_refused_until_removed(ready: Run, host_env: Path) -> None:
    _write_env_row('{"TZ": "UTC", "LD_PRELOAD": "/tmp/x.so"}')
    refused(
        ready,
        host_env,
        "groups",
        "config",
        "main",
        "--model",
        "gpt-5.5",
        says="the group's stored env name 'LD_PRELOAD' is reserved",
    )
    assert (
        "remove it with --unset-env LD_PRELOAD"
        in ready("groups", "config", "main", "--model", "x", ok=False).stderr
    )
    ready("groups", "config", "main", "--unset-env", "LD_PRELOAD")
    assert ready("groups", "show", "main", "--json").json()["env"] == {"TZ": "UTC"}
    ready("groups", "config", "main", "--model", "gpt-5.5")


@pytest.fixture
def serve_calls(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """``nanohost serve`` up to the point where it would start serving (recorded instead)."""
    from nanohost import app as host_app

    calls: list[Settings] = []
    monkeypatch.setattr(host_app, "run", calls.append)
    return calls


def test_serve_refuses_default_limits_the_engine_cannot_grant(
    cli: Run, monkeypatch: pytest.MonkeyPatch, serve_calls: list[Settings]
) -> None:
    monkeypatch.setenv("NANOHOST_CONTAINER_CPUS", "64")
    result = cli("serve", ok=False)
    assert result.code == 1
    assert (
        result.stderr == "error: NANOHOST_CONTAINER_CPUS=64 is more than the 2 CPUs the Docker engine has\n"
    )
    monkeypatch.setenv("NANOHOST_CONTAINER_CPUS", "2")
    monkeypatch.setenv("NANOHOST_CONTAINER_MEMORY", "8g")
    result = cli("serve", ok=False)
    assert "NANOHOST_CONTAINER_MEMORY=8g is more than the 4g of memory the Docker engine has" in result.stderr
    assert serve_calls == []


def test_serve_starts_with_limits_the_engine_has(
    cli: Run, engine_asked: list[int], serve_calls: list[Settings]
) -> None:
    cli("serve")
    assert engine_asked == [1]
    assert [(s.container_memory, s.container_cpus) for s in serve_calls] == [("1g", 1.0)]
