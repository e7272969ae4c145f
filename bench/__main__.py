"""``python -m bench [NAME ...|all]``: run benchmarks, print one table, write bench/results/NAME.json.

The five benchmarks of the performance budget (DESIGN.md) run by default (``all``): latency,
cold_start, fanout, footprint, router. ``flood``, ``soak`` and ``channels`` are extra benchmarks
with their own scripts and options (``python bench/flood.py --help``); naming one here runs it as
it is and prints what it prints. ``python -m bench readme`` rewrites README's benchmark table
from bench/results/. Needs a Docker engine; the agent image is built (layer cache) when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Result, machine, save  # noqa: E402

MAIN = ("latency", "cold_start", "fanout", "footprint", "router")
EXTRA = ("flood", "soak", "channels")


def table(results: list[Result]) -> str:
    rows = [("benchmark", "figure", "measured", "target", "")]
    for result in results:
        for r in result.rows:
            status = {True: "met", False: "MISSED", None: ""}[r.met]
            rows.append((result.name, r.metric, r.value, r.target, status))
    widths = [min(max(len(row[i]) for row in rows), 70) for i in range(5)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", default=["all"], help=f"all, {', '.join(MAIN + EXTRA)}, readme")
    parser.add_argument("--messages", type=int, default=500, help="latency: warm messages per path")
    parser.add_argument("--runs", type=int, default=20, help="cold_start: cold starts per agent")
    parser.add_argument("--groups", type=int, default=50, help="fanout: groups messaging at once")
    parser.add_argument("--cap", type=int, default=8, help="fanout, footprint: container cap")
    parser.add_argument("--timeout", type=float, default=180.0, help="fanout: seconds to wait for replies")
    parser.add_argument("--configured", type=int, default=1000, help="footprint: groups configured")
    parser.add_argument("--idle", type=float, default=20.0, help="footprint: seconds of idle CPU sampling")
    parser.add_argument("--burst", type=int, default=5000, help="router: messages routed")
    return parser.parse_args()


async def main() -> int:
    opts = parse()
    names: list[str] = []
    for name in opts.names:
        names.extend(MAIN if name == "all" else [name])
    unknown = [n for n in names if n not in MAIN + EXTRA + ("readme",)]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from all, {', '.join(MAIN + EXTRA)}, readme")
        return 2
    info = machine()
    print(f"{info['cores']} cores ({info['cpu']}), load {' '.join(f'{x:.2f}' for x in info['loadavg'])}")
    results: list[Result] = []
    for name in names:
        if name == "readme":
            from bench.readme import update_readme

            print(f"README benchmark table rewritten from {update_readme()}")
            continue
        if name in EXTRA:
            script = str(ROOT / "bench" / f"{name}.py")
            extra = await asyncio.create_subprocess_exec(sys.executable, script, cwd=ROOT)
            await extra.wait()
            continue
        started, load, clock = dt.datetime.now(dt.UTC), list(os.getloadavg()), time.perf_counter()
        print(f"\n== {name} (load {' '.join(f'{x:.2f}' for x in load)})", flush=True)
        module = importlib.import_module(f"bench.{name}")
        result: Result = await module.run(opts)
        path = save(result, started, load, time.perf_counter() - clock)
        print(table([result]))
        print(f"-> {path.relative_to(ROOT)}", flush=True)
        results.append(result)
    if len(results) > 1:
        print("\n" + table(results))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
