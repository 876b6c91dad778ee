"""Run the performance harness and print its tables (figures, not pass/fail).

    .venv/bin/python -m bench                       # every part
    .venv/bin/python bench/run.py --only commands   # one part (or a comma list)
    .venv/bin/python -m bench --only scheduler,import --scale 10000

Parts: ``imports`` (cold import and first call of every function), ``commands`` (database
commands and runtime overhead per action), ``scheduler`` (the timer over N stale repairs and N
unpaid bills), ``import`` (an N-row Excel bill import, then an N-row owner import), ``engine``
(what one command and one list page cost on the embedded engine). ``MONGODB_URI`` in the
environment runs everything against that MongoDB (in a database named ``caiyun_bench``, dropped
before and after); without it, the embedded engine. See bench/README.md for what each figure
means and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `caiyun` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "layers" / "common")]

from bench import _support

PARTS = ("imports", "commands", "scheduler", "import", "engine", "pushes", "company")
# The company-size timer run loads 1.7 million documents (about 6 GB and two minutes on the
# embedded engine): it runs when named, not by default.
DEFAULT_PARTS = [part for part in PARTS if part != "company"]


def _parts(value: str) -> list[str]:
    chosen = [p.strip() for p in value.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part {unknown}; parts: {', '.join(PARTS)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", type=_parts, default=DEFAULT_PARTS, help="part[,part…]")
    parser.add_argument(
        "--scale", type=int, default=100_000, help="N for scheduler and import (100000)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=180.0,
        help="seconds each of scheduler and import may spend growing N on the embedded engine",
    )
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per cold import")
    parser.add_argument("--repeat", type=int, default=30, help="calls per read action")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)

    print(
        f"# caiyun bench — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{_support.engine_name()} engine, parts: {', '.join(args.only)}"
    )
    figures: dict[str, Any] = {}
    began = time.perf_counter()
    for part in PARTS:
        if part not in args.only:
            continue
        started = time.perf_counter()
        if part == "imports":
            from bench import imports

            figures[part] = imports.run(args.runs)
        elif part == "commands":
            from bench import commands

            figures[part] = commands.run(args.repeat)
        elif part == "scheduler":
            from bench import scheduler

            figures[part] = scheduler.run(args.scale, args.budget)
        elif part == "import":
            from bench import bill_import, owner_import

            figures[part] = bill_import.run(args.scale, args.budget)
            figures["owner_import"] = owner_import.run(args.scale)
        elif part == "engine":
            from bench import engine

            figures[part] = engine.run()
        elif part == "pushes":
            from bench import pushes

            figures[part] = pushes.run()
        elif part == "company":
            from bench import timer_company

            figures[part] = timer_company.run()
        _support.note(f"({part}: {_support.fmt_s(time.perf_counter() - started)})")
    _summary(figures)
    _support.note(f"\n(all parts: {_support.fmt_s(time.perf_counter() - began)})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    return 0


def _summary(figures: dict[str, Any]) -> None:
    """Every figure over its target, in one list."""
    over: list[str] = []
    if "imports" in figures:
        for name, f in figures["imports"]["functions"].items():
            if f["ratio"] is not None and f["ratio"] > 1.3:
                over.append(f"cold import of {name}: {f['ratio']:.2f}× baseline (target ≤ 1.3×)")
    if "commands" in figures and figures["commands"]["over"]:
        listed = figures["commands"]["over"]
        over.append(f"database commands of {len(listed)} actions: " + "; ".join(listed))
    for part, target, label in (
        ("scheduler", 1.5, "scheduler"),
        ("import", 2.0, "bill import"),
        ("owner_import", 2.0, "owner import"),
    ):
        at = figures.get(part, {}).get("at_scale") or {}
        if at.get("ratio") is not None and at["ratio"] > target:
            how = "extrapolated" if at.get("extrapolated") else "measured"
            over.append(f"{label}: {at['ratio']:.2f}× raw at scale ({how}; target ≤ {target}×)")
    for point in figures.get("scheduler", {}).get("points", []):
        for job, error in point.get("errors", {}).items():
            over.append(f"scheduler job {job} FAILED at N={point['n']:,}: {error}")
    rss = (figures.get("import", {}).get("at_scale") or {}).get("rss_peak_mb")
    if rss is not None and rss >= 300:
        over.append(f"bill import peak RSS {rss:.0f} MB (target < 300 MB)")
    if not figures:
        return
    print("\n### Over target\n")
    print("\n".join(f"- {line}" for line in over) if over else "- nothing")


if __name__ == "__main__":
    raise SystemExit(main())
