"""`nanohost-mcp-sqlite`: an MCP server (stdio) over one SQLite database in the group's folder.

It ships in the agent image, so a group can use it as it is::

    nanohost groups config main --mcp-add db --command nanohost-mcp-sqlite --arg records.db \
        --instructions "Keep lists, expenses and other records in the db tools' tables."

The one argument is the database file, relative to the agent's working directory
(``/workspace/agent``) or absolute; it is created on the first write. Tools:

- ``list_tables()`` and ``describe_table(name)``: what is there;
- ``read_query(sql, params)``: one read-only statement (the database is opened read-only for it),
  at most ``MAX_ROWS`` rows back;
- ``write_query(sql, params)``: one statement that changes data or schema, committed at once.

Parameters are bound (``?`` placeholders), never pasted into the SQL. It needs only the ``mcp``
SDK, which the image's /opt/venv has.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

MAX_ROWS = 200
MAX_CELL = 2_000
DEFAULT_DATABASE = "data.db"

server = MCPServer(
    "sqlite",
    instructions=(
        "A SQLite database in the group's folder. list_tables and describe_table show its schema; "
        "read_query runs one SELECT; write_query runs one INSERT, UPDATE, DELETE or CREATE. "
        "Bind values with ? placeholders and params."
    ),
)
database = Path(DEFAULT_DATABASE)


def _cell(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and len(value) > MAX_CELL:
        return value[:MAX_CELL] + f"… ({len(value) - MAX_CELL} more characters)"
    return value


def _read_only() -> contextlib.closing[sqlite3.Connection]:
    if not database.is_file():
        raise ToolError(f"{database} does not exist yet; create a table with write_query first")
    return contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True))


def _run(connection: sqlite3.Connection, sql: str, params: list[Any]) -> sqlite3.Cursor:
    try:
        return connection.execute(sql, params)
    except (sqlite3.Error, sqlite3.Warning, ValueError) as exc:
        raise ToolError(f"SQLite refused it: {exc}") from None


@server.tool()
def list_tables() -> str:
    """The database's tables and views."""
    if not database.is_file():
        return "no tables yet"
    with _read_only() as connection:
        rows = connection.execute(
            "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    return "\n".join(f"{name} ({kind})" for kind, name in rows) or "no tables yet"


@server.tool()
def describe_table(name: str) -> str:
    """A table's columns: name, type, not null, default, primary key."""
    with _read_only() as connection:
        columns = _run(connection, "SELECT * FROM pragma_table_info(?)", [name]).fetchall()
    if not columns:
        raise ToolError(f"no table {name!r}; see list_tables")
    return json.dumps(
        [
            {"name": c[1], "type": c[2], "not_null": bool(c[3]), "default": c[4], "primary_key": bool(c[5])}
            for c in columns
        ],
        indent=2,
    )


@server.tool()
def read_query(sql: str, params: list[Any] | None = None) -> str:
    """Run one read-only statement (SELECT …) and return its rows as JSON."""
    with _read_only() as connection:
        cursor = _run(connection, sql, params or [])
        rows = cursor.fetchmany(MAX_ROWS + 1)
        columns = [d[0] for d in cursor.description or ()]
    result: dict[str, Any] = {
        "columns": columns,
        "rows": [[_cell(v) for v in row] for row in rows[:MAX_ROWS]],
    }
    if len(rows) > MAX_ROWS:
        result["note"] = f"only the first {MAX_ROWS} rows; narrow the query (WHERE, LIMIT) for the rest"
    return json.dumps(result, indent=2, default=str)


@server.tool()
def write_query(sql: str, params: list[Any] | None = None) -> str:
    """Run one statement that changes the database (INSERT, UPDATE, DELETE, CREATE, ALTER, DROP)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(database)
    try:
        with connection:
            cursor = _run(connection, sql, params or [])
            if cursor.description is not None:
                raise ToolError("that statement returns rows; use read_query")
            changed = cursor.rowcount
    finally:
        connection.close()
    return f"done ({changed} row{'s' if changed != 1 else ''} changed)" if changed >= 0 else "done"


def main(argv: list[str]) -> None:
    global database
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print(__doc__)
        print("usage: nanohost-mcp-sqlite [DATABASE]  (default: data.db)", file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    database = Path(argv[0] if argv else DEFAULT_DATABASE)
    server.run("stdio")


if __name__ == "__main__":
    main(sys.argv[1:])
