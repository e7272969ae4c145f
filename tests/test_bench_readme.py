"""README's benchmark table is generated from bench/results (python -m bench readme)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.readme import BEGIN, END, update_readme


def result(name: str, met: bool | None) -> dict[str, object]:
    return {
        "benchmark": name,
        "date": "2026-12-01T05:00:00+00:00",
        "seconds": 12.0,
        "machine": {"cores": 2, "cpu": "Test CPU", "loadavg_before": [1.5, 1.0, 0.5]},
        "rows": [{"metric": "a | b", "value": "3 ms", "target": "≤ 5 ms", "met": met}],
        "figures": {},
        "notes": [],
    }


def test_the_table_between_the_markers_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "router.json").write_text(json.dumps(result("router", False)))
    (tmp_path / "results" / "latency.json").write_text(json.dumps(result("latency", True)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{BEGIN}\nold table\n{END}\nafter\n")
    update_readme(readme, tmp_path / "results")
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{END}\nafter\n")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows == [
        "| `latency` | a \\| b | 3 ms | ≤ 5 ms | met |",
        "| `router` | a \\| b | 3 ms | ≤ 5 ms | **missed** |",
    ]
    assert "2 cores (Test CPU), load average 1.50 1.00 0.50" in text


def test_a_readme_without_markers_is_refused(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# no table here\n")
    with pytest.raises(ValueError, match="bench:begin"):
        update_readme(tmp_path / "README.md", tmp_path)
