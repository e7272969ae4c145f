"""Codex's thread items (``item/started``, ``item/completed``, 0.138) as the viewer's neutral items
(``agent_runner.items``). Command output is also gathered from ``item/commandExecution/outputDelta``,
since on 0.138 a command's ``item/completed`` can arrive after ``turn/completed``."""

from __future__ import annotations

import json
from typing import Any

MAX_GATHERED = 64 * 1024
"""Characters of streamed output kept per command (the archive keeps less)."""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _tool_result(result: Any) -> str | None:
    if not isinstance(result, dict):
        return None if result is None else _text(result)
    parts = []
    for block in result.get("content") or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            parts.append(_text(block))
    if not parts and result.get("structuredContent") is not None:
        parts.append(_text(result["structuredContent"]))
    return "\n".join(parts)


def _kind(kind: Any) -> str:
    if isinstance(kind, dict):
        return str(kind.get("type", ""))
    return str(kind or "")


def neutral(item: dict[str, Any], gathered: str = "") -> dict[str, Any] | None:
    """The neutral item for a Codex thread item; None for those the viewer does not show (the
    user's own message: the turn's prompts carry it)."""
    kind = item.get("type")
    base: dict[str, Any] = {"id": str(item.get("id") or ""), "status": str(item.get("status") or "completed")}
    if kind == "userMessage":
        return None
    if kind == "agentMessage":
        return {**base, "type": "message", "text": str(item.get("text") or "")}
    if kind == "reasoning":
        summary = item.get("summary") or []
        text = "\n\n".join(str(s) for s in summary) if isinstance(summary, list) else str(summary)
        return {**base, "type": "reasoning", "text": text}
    if kind == "commandExecution":
        output = item.get("aggregatedOutput")
        return {
            **base,
            "type": "command",
            "command": str(item.get("command") or ""),
            "output": output if isinstance(output, str) else gathered,
            "exit_code": item.get("exitCode"),
            "duration_ms": item.get("durationMs"),
        }
    if kind == "fileChange":
        changes = [
            {"path": c.get("path"), "kind": _kind(c.get("kind")), "diff": c.get("diff")}
            for c in item.get("changes") or []
            if isinstance(c, dict)
        ]
        return {**base, "type": "file_change", "changes": changes}
    if kind == "mcpToolCall":
        error = item.get("error")
        return {
            **base,
            "type": "tool_call",
            "server": item.get("server"),
            "tool": item.get("tool"),
            "arguments": _text(item.get("arguments")),
            "result": _tool_result(item.get("result")),
            "error": _text(error.get("message") if isinstance(error, dict) else error) if error else None,
            "duration_ms": item.get("durationMs"),
        }
    if kind == "webSearch":
        return {**base, "type": "web_search", "text": str(item.get("query") or "")}
    return {**base, "type": "other", "text": str(kind)}


class CommandSteps:
    """A turn's commands as steps: each command's output as it streams in
    (``item/commandExecution/outputDelta``), shown on its first output and then once per KiB, and
    the commands not completed yet. Codex 0.138 sends deltas only when it reads a running
    command's output (a command that ends within its yield window gets its output only at the
    end), so a step may go from started straight to completed."""

    def __init__(self) -> None:
        self.gathered: dict[str, str] = {}
        self.open: dict[str, dict[str, Any]] = {}

    def item(self, method: str, item: dict[str, Any]) -> dict[str, Any] | None:
        """``item/started`` or ``item/completed`` of any item: the step to show, or None."""
        item_id = str(item.get("id") or "")
        if item.get("type") == "commandExecution":
            if method == "item/started":
                self.open[item_id] = item
            else:
                self.open.pop(item_id, None)
        return neutral(item, self.gathered.get(item_id, ""))

    def delta(self, item_id: str, text: str) -> dict[str, Any] | None:
        """Output of a running command: its step with the output so far, when that is worth a
        new look (the first output, each further KiB); None otherwise."""
        so_far = self.gathered.get(item_id, "")
        if len(so_far) >= MAX_GATHERED:
            return None
        now = self.gathered[item_id] = so_far + text[: MAX_GATHERED - len(so_far)]
        started = self.open.get(item_id)
        if started is None or (so_far and len(now) // 1024 == len(so_far) // 1024):
            return None
        return neutral(started, now)

    def completed(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """A command open when the turn ended, as completed (its real ``item/completed`` if it came
        late, else its started item marked completed), with the output gathered."""
        return neutral(item, self.gathered.get(str(item.get("id") or ""), ""))
