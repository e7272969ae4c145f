"""The container boundary against a hostile agent, tried as an attacker would: from a shell inside
a real running group container, as the agent user (``docker exec``).

Each test plays one attack from SECURITY.md's table and asserts the host side held: host files
untouched, grants unchanged, bad rows skipped, a broken queue quarantined, and another group
answering meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nanohost.db.engine import transaction
from nanohost.db.models import AgentSession, Message
from tests.integration.conftest import AUTH, add_group, make_settings
from tests.support.host import containers_of

pytestmark = pytest.mark.docker


def container_of(docker_client: Any, settings: Any, folder: str) -> Any:
    """The running container of ``folder`` in this test's own installation."""
    (container,) = containers_of(docker_client, settings, folder)
    return container


def as_agent(container: Any, script: str) -> tuple[int, str]:
    """Run a shell script inside the container as the agent user."""
    code, output = container.exec_run(["sh", "-c", script], user="1000:1000")
    return int(code), output.decode(errors="replace")


def python_in(container: Any, code: str) -> tuple[int, str]:
    """Run Python inside the container as the agent user (the runner's interpreter)."""
    result, output = container.exec_run(["/opt/venv/bin/python", "-c", code], user="1000:1000")
    return int(result), output.decode(errors="replace")


async def woken(
    tmp_path: Path, start_host: Any, docker_client: Any, group: str, *others: str
) -> tuple[Any, Any, Any]:
    """A host with ``group`` (and ``others``) whose container has answered once: (settings,
    host, that container)."""
    settings = make_settings(tmp_path)
    for name in (group, *others):
        add_group(settings, name)
    host = await start_host(settings)
    first = await host.send(group, "hello")
    assert await host.replies_after(group, first)
    return settings, host, container_of(docker_client, settings, group)


RING = (
    "import socket\ns = socket.socket(socket.AF_UNIX)\n"
    "s.connect('/workspace/session/doorbell.sock')\ns.sendall(b'outbound\\n')\ns.close()\n"
)


def outbound_insert(rows: list[tuple[str, str]]) -> str:
    """Python that writes rows straight into the container's queue, as a hostile agent can."""
    return (
        "import sqlite3, time\n"
        "db = sqlite3.connect('/workspace/session/outbound.db', isolation_level=None)\n"
        "db.execute('PRAGMA journal_mode=PERSIST')\n"
        f"for kind, payload in {rows!r}:\n"
        "    db.execute('INSERT INTO outbound VALUES (NULL, ?, ?, 0)', (kind, payload))\n"
        "db.close()\n" + RING
    )


async def test_planted_links_never_steer_a_host_write_read_or_chown(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings, host, container = await woken(tmp_path, start_host, docker_client, "team")

    victim = tmp_path / "victim"  # stands for /root, /etc: anything of the host's
    victim.mkdir()
    secret = victim / "shadow"
    secret.write_text("HOST-SECRET-LINE\n")
    profile = victim / "profile"
    profile.write_text("# the operator's shell profile\n")
    before = {p.name: (p.read_bytes(), p.stat().st_uid, p.stat().st_mode) for p in victim.iterdir()}

    # 1. the session dir is the host's: nothing in it can be created, replaced or linked
    for attack in (
        f"ln -sf {profile} /workspace/session/runner.json",
        f"ln -sf {profile} /workspace/session/tasks.json",
        f"rm -f /workspace/session/tasks.json && ln -s {profile} /workspace/session/tasks.json",
        f"ln -sf {profile} /workspace/session/tasks.tmp",
        "touch /workspace/session/anything",
        "rm /workspace/session/outbound.db",
        f"ln -sf {profile} /workspace/session/outbound.db-journal",
    ):
        code, output = as_agent(container, attack)
        assert code != 0, f"{attack!r} succeeded inside the container: {output}"

    # 2. links in the agent's own trees, where the host composes, syncs skills and chowns
    for attack in (
        f"rm -rf /workspace/agent/.agents && ln -s {victim} /workspace/agent/.agents",
        f"rm -f /workspace/agent/memory/index.md && ln -s {secret} /workspace/agent/memory/index.md",
        f"ln -s {victim} /workspace/agent/escape",
        f"rm -rf /workspace/agent/inbox && ln -s {victim} /workspace/agent/inbox",
        f"rm -f ~/.codex/auth.json && ln -s {victim}/created-by-host ~/.codex/auth.json",
    ):
        code, output = as_agent(container, attack)
        assert code == 0, f"{attack!r}: {output}"

    # the host's next wake composes, syncs skills, hands the trees over and writes its files
    runtime = host.orchestrator.runtimes[1]
    await runtime.stop("test: next wake")
    second = await host.send("team", "again")
    assert [r["text"] for r in await host.replies_after("team", second)] == ["echo: again"]
    container = container_of(docker_client, settings, "team")
    code, output = python_in(
        container,
        outbound_insert([("task", json.dumps({"op": "schedule", "prompt": "p", "schedule": "every 5m"}))]),
    )
    assert code == 0, output
    await host.orchestrator.runtimes[1].pump()
    assert json.loads((runtime.dir / "tasks.json").read_text())[0]["prompt"] == "p"

    after = {p.name: (p.read_bytes(), p.stat().st_uid, p.stat().st_mode) for p in victim.iterdir()}
    assert after == before, "a host file was written, created or chowned through an agent's link"
    assert not (runtime.dir / "runner.json").is_symlink() and (runtime.dir / "runner.json").stat().st_uid == 0


async def test_a_restarted_host_takes_grants_from_its_database_not_the_container(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings, host, container = await woken(tmp_path, start_host, docker_client, "team")
    granted = host.orchestrator.runtimes[1].placeholder
    assert granted is not None

    # the agent cannot widen its grant: runner.json is read-only inside
    code, _ = python_in(
        container,
        "import json; p='/workspace/session/runner.json'; d=json.load(open(p)); "
        "d['egress_allow']=['*']; open(p,'w').write(json.dumps(d))",
    )
    assert code != 0
    # even a runner.json changed behind the host's back (an older layout) is never believed
    await host.client.close()
    runner_json = settings.sessions_dir / "1" / "runner.json"
    forged = json.loads(runner_json.read_text())
    forged.update(egress_allow=["*"], placeholder="nh-ph-forged")
    runner_json.write_text(json.dumps(forged))

    again = await start_host(settings)  # adopts the running container
    runtime = again.orchestrator.runtimes[1]
    assert runtime.container_id == container.id
    grants = again.orchestrator.ctx.gateway._grants
    assert set(grants) == {granted}
    assert grants[granted].egress == ()
    # from inside: CONNECT through the egress socket to the host's own loopback is refused
    auth = base64.b64encode(f"nh:{granted}".encode()).decode()
    request = f"CONNECT 127.0.0.1:{again.client.port} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
    code, output = await asyncio.to_thread(  # off the loop: the gateway answering runs on it
        python_in,
        container,
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX); s.connect('/run/nanohost/egress.sock')\n"
        f"s.sendall({request.encode()!r})\n"
        "print(s.recv(200).decode())\n",
    )
    assert code == 0 and output.startswith("HTTP/1.1 403"), output
    second = await again.send("team", "still fine")
    assert [r["text"] for r in await again.replies_after("team", second)] == ["echo: still fine"]


async def test_poison_rows_are_skipped_and_the_session_goes_on(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings, host, container = await woken(tmp_path, start_host, docker_client, "team")
    poison = [
        ("message", json.dumps({"text": "typed wrong", "in_reply_to": 5})),
        ("task", json.dumps({"op": "cancel", "task_id": "abc"})),
        ("task", json.dumps({"op": "cancel", "task_id": 99999999999999999999999})),
        ("message", "null"),
        ("message", json.dumps({"text": "\ud800 lone surrogate"})),
        ("file", json.dumps({"path": 7})),
        ("telepathy", "{}"),
    ]
    code, output = python_in(
        container,
        outbound_insert(poison)
        + "import sqlite3\ndb = sqlite3.connect('/workspace/session/outbound.db', isolation_level=None)\n"
        "db.execute('PRAGMA journal_mode=PERSIST')\n"
        "db.execute(\"INSERT INTO outbound VALUES (NULL, 'message', CAST(x'ff7b7d' AS TEXT), 0)\")\n"
        "db.execute(\"INSERT INTO outbound VALUES (NULL, x'ff', '{}', 0)\")\n"
        "db.execute(\"INSERT INTO outbound VALUES (NULL, 'message', zeroblob(2000000), 0)\")\n"
        "db.execute(\"INSERT INTO acks VALUES (999999, 'maybe', x'ff', 0)\")\n"
        "db.execute(\"INSERT OR REPLACE INTO state VALUES ('continuation', x'ff00')\")\n",
    )
    assert code == 0, output
    second = await host.send("team", "are you there")
    replies = await host.replies_after("team", second)
    assert [r["text"] for r in replies][-1] == "echo: are you there"
    with transaction(host.orchestrator.ctx.db) as db:
        session = db.get(AgentSession, 1)
        assert session is not None and session.status == "running"
        assert session.last_error is None or "refused" in session.last_error
        outs = db.scalars(select(Message.text).where(Message.direction == "out")).all()
    assert "typed wrong" not in outs  # the wrongly typed reply was refused, not half-imported


async def test_a_corrupted_queue_quarantines_only_that_session(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings, host, container = await woken(tmp_path, start_host, docker_client, "team", "other")
    code, output = as_agent(container, "head -c 65536 /dev/urandom > /workspace/session/outbound.db")
    assert code == 0, output

    waiting = await host.send("team", "answer me after the damage")
    replies = await host.replies_after("team", waiting, wait=90)
    notices = [r["text"] for r in replies if "set aside for the operator" in r["text"]]
    assert len(notices) == 1
    while not any(r["text"] == "echo: answer me after the damage" for r in replies):
        more = await host.replies_after("team", replies[-1]["id"], wait=90)
        assert more, "the waiting message was never answered by the fresh session"
        replies += more
    other = await host.send("other", "meanwhile")
    assert [r["text"] for r in await host.replies_after("other", other)] == ["echo: meanwhile"]

    with transaction(host.orchestrator.ctx.db) as db:
        old = db.get(AgentSession, 1)
        assert old is not None and old.status == "failed" and old.quarantined_at is not None
        assert old.last_error is not None and "quarantined" in old.last_error
        fresh = db.scalars(select(AgentSession).where(AgentSession.group_id == old.group_id)).all()[-1]
        assert fresh.id != old.id and fresh.quarantined_at is None
    kept = list((settings.data_dir / "quarantine").glob("session-1-*/files/outbound.db"))
    assert len(kept) == 1 and kept[0].stat().st_size == 65536  # kept for the operator, as found
    later = await host.send("team", "and later")
    assert [r["text"] for r in await host.replies_after("team", later)] == ["echo: and later"]
    health = await host.client.get("/healthz")
    body = await health.json()
    assert body["quarantined"][0]["session"] == 1, body


async def test_oversized_output_is_refused_and_other_groups_stay_fast(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings, host, container = await woken(tmp_path, start_host, docker_client, "flood", "calm")
    big = "x" * (20 * 1024 * 1024)
    code, output = python_in(
        container,
        "import sqlite3, json\n"
        "db = sqlite3.connect('/workspace/session/outbound.db', isolation_level=None)\n"
        "db.execute('PRAGMA journal_mode=PERSIST')\n"
        f"big = json.dumps({{'text': 'x' * {len(big)}, 'in_reply_to': []}})\n"
        "for _ in range(3):\n"
        "    db.execute(\"INSERT INTO outbound VALUES (NULL, 'message', ?, 0)\", (big,))\n"
        "for i in range(120):\n"
        "    db.execute(\"INSERT INTO outbound VALUES (NULL, 'message', ?, 0)\","
        " (json.dumps({'text': f'spam {i}', 'in_reply_to': []}),))\n" + RING,
    )
    assert code == 0, output
    calm = await host.send("calm", "still answering?")
    assert [r["text"] for r in await host.replies_after("calm", calm)] == ["echo: still answering?"]
    health = await host.client.get("/healthz")
    assert health.status == 200
    runtime = host.orchestrator.runtimes[1]
    await runtime.pump()
    with transaction(host.orchestrator.ctx.db) as db:
        texts = db.scalars(
            select(Message.text).where(Message.group_id == 1, Message.direction == "out").order_by(Message.id)
        ).all()
    assert not any(len(t) > 200_000 for t in texts)  # the 20 MiB rows were never imported
    spam = [t for t in texts if t.startswith("spam ")]
    assert len(spam) <= 50  # the per-turn message limit
    assert sum("more than 50 messages in one turn" in t for t in texts) == 1
    messages = await host.client.get("/api/groups/flood/messages?after=0", headers=AUTH)
    assert messages.status == 200


def test_queue_files_are_regular_and_owned_as_documented(tmp_path: Path) -> None:
    """The host prepares the agent's three writable files itself, as the container user's."""
    from nanohost.session_dir import AGENT_FILES, SessionDir

    session = SessionDir(tmp_path / "7")
    (tmp_path / "7").mkdir()
    os.symlink("/etc/passwd", tmp_path / "7" / "outbound.db")  # left by an older layout's agent
    session.prepare()
    for name in AGENT_FILES:
        path = tmp_path / "7" / name
        assert path.is_file() and not path.is_symlink()
    assert sqlite3.connect(tmp_path / "7" / "outbound.db").execute("PRAGMA user_version").fetchone() == (0,)
