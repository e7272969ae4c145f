"""README's benchmark table, generated from bench/results/*.json (``python -m bench readme``).

The table sits between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` in README.md; each
benchmark's rows carry the date it ran and the machine (cores, CPU, load average at its start).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ORDER = ("latency", "cold_start", "fanout", "footprint", "router")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | figure | measured | target | |",
        "|---|---|---|---|---|",
    ]
    for data in results:
        for row in data["rows"]:
            status = {True: "met", False: "**missed**", None: ""}[row["met"]]
            lines.append(
                f"| `{data['benchmark']}` | {_cell(row['metric'])} | {_cell(row['value'])} | "
                f"{_cell(row['target'])} | {status} |"
            )
    lines.append("")
    for data in results:
        info = data["machine"]
        load = " ".join(f"{x:.2f}" for x in info.get("loadavg_before", info.get("loadavg", [])))
        lines.append(
            f"- `{data['benchmark']}`: {data['date'][:16].replace('T', ' ')} UTC, {info['cores']} cores "
            f"({info['cpu'] or 'unknown CPU'}), load average {load} at its start, {data['seconds']:.0f} s"
        )
    return "\n".join(lines)


def load(results_dir: Path = RESULTS) -> list[dict[str, Any]]:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}
    return [found[name] for name in (*ORDER, *sorted(set(found) - set(ORDER))) if name in found]


def render(readme: str, results: list[dict[str, Any]]) -> str:
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README.md has no {BEGIN} … {END} section")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(results)}\n{END}{tail}"


def update_readme(readme: Path = README, results_dir: Path = RESULTS) -> Path:
    readme.write_text(render(readme.read_text(), load(results_dir)))
    return results_dir
