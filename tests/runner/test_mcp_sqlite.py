"""The image's SQLite MCP server (container/mcp_servers/nanohost_sqlite.py) through a real MCP
stdio client session (official SDK), as Codex starts it: in the group folder, with one argument.
The same server inside the built image is checked in tests/integration/test_image_contents.py."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

SERVER = Path(__file__).resolve().parents[2] / "container" / "mcp_servers" / "nanohost_sqlite.py"


@asynccontextmanager
async def open_db(workspace: Path, *args: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=[str(SERVER), *args], cwd=str(workspace))
    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - opening /dev/null does not block
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: object) -> tuple[bool, str]:
    result = await session.call_tool(tool, arguments)
    return bool(result.is_error), " ".join(getattr(c, "text", "") for c in result.content)


async def test_records_round_trip_in_the_group_folder(tmp_path: Path) -> None:
    async with open_db(tmp_path, "records.db") as db:
        names = {t.name for t in (await db.list_tools()).tools}
        assert names == {"list_tables", "describe_table", "read_query", "write_query"}
        assert await call(db, "list_tables") == (False, "no tables yet")
        assert await call(db, "write_query", sql="CREATE TABLE expenses (item TEXT NOT NULL, eur REAL)") == (
            False,
            "done",
        )
        for item, eur in (("train", 42.5), ("hotel", 120.0), ("'; DROP TABLE expenses; --", 1)):
            error, text = await call(
                db, "write_query", sql="INSERT INTO expenses VALUES (?, ?)", params=[item, eur]
            )
            assert (error, text) == (False, "done (1 row changed)")
        error, text = await call(
            db, "read_query", sql="SELECT item, eur FROM expenses WHERE eur > ? ORDER BY eur", params=[10]
        )
        assert not error and json.loads(text) == {
            "columns": ["item", "eur"],
            "rows": [["train", 42.5], ["hotel", 120.0]],
        }
        assert await call(db, "list_tables") == (False, "expenses (table)")
        error, text = await call(db, "describe_table", name="expenses")
        assert not error and [c["name"] for c in json.loads(text)] == ["item", "eur"]
    assert (tmp_path / "records.db").is_file()  # relative to the agent's working directory


async def test_reads_cannot_write_and_mistakes_are_tool_errors(tmp_path: Path) -> None:
    async with open_db(tmp_path) as db:
        error, text = await call(db, "read_query", sql="SELECT 1")
        assert error and "does not exist yet" in text
        await call(db, "write_query", sql="CREATE TABLE t (x)")
        error, text = await call(db, "read_query", sql="INSERT INTO t VALUES (1)")
        assert error and "readonly" in text.replace("-", "").replace(" ", "").lower()
        error, text = await call(db, "write_query", sql="INSERT INTO t VALUES (1); DROP TABLE t")
        assert error and "one statement" in text
        error, text = await call(db, "write_query", sql="SELECT * FROM t")
        assert error and "use read_query" in text
        error, text = await call(db, "describe_table", name="ghost")
        assert error and "no table 'ghost'" in text
        error, text = await call(db, "read_query", sql="SELECT count(*) FROM t")
        assert not error and json.loads(text)["rows"] == [[0]]  # the refused statements left nothing
    assert (tmp_path / "data.db").is_file()


async def test_large_results_are_capped(tmp_path: Path) -> None:
    async with open_db(tmp_path, "big.db") as db:
        await call(db, "write_query", sql="CREATE TABLE n (i INTEGER, blob BLOB, text TEXT)")
        await call(
            db,
            "write_query",
            sql="WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500) "
            "INSERT INTO n SELECT i, randomblob(10), printf('%.3000c', 'x') FROM c",
        )
        error, text = await call(db, "read_query", sql="SELECT * FROM n")
        result = json.loads(text)
        assert not error and len(result["rows"]) == 200 and "first 200 rows" in result["note"]
        assert result["rows"][0][1] == "<10 bytes>" and result["rows"][0][2].endswith(
            "(1000 more characters)"
        )
