"""Cold start: importing ``functions/<name>/index.py`` in a fresh process, and its first call.

Each figure is the median of ``--runs`` fresh interpreters (bytecode already compiled, as in a
deployed package). The interpreter's own start-up is left out of both sides: the clock starts
after ``python`` is up, just before the import.

* ``import``: loading ``index.py`` as the platform does (module import only; services are
  built on the first call).
* ``baseline``: ``import pymongo, pydantic`` alone. Target: import ≤ 1.3 × baseline.
* ``1st call``: the first ``main_handler`` call after the import: settings, database and
  adapters built, then one request (the function's first action with an empty payload from an
  unknown openid, so it is refused after one account lookup; the timer for ``scheduler``, a
  GET for ``icbc_callback``). On the embedded engine this includes creating every index.
* ``2nd call``: the same call again, warm.
* ``extra at import``: third-party packages loaded by the import that the baseline does not
  load; ``+ at 1st call``: those the first call adds.
* ``where the extra goes``: self time from ``python -X importtime`` of the modules the
  baseline does not import, summed by package (``caiyun.contract`` …), largest first.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from typing import Any

from bench._support import (
    FUNCTIONS_DIR,
    ROOT,
    child_env,
    child_result,
    fmt_x,
    median,
    note,
    print_table,
    run_child,
)

TARGET_RATIO = 1.3
_STDLIB = set(sys.stdlib_module_names)
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def function_names() -> list[str]:
    """Every function folder with an index.py."""
    return sorted(p.parent.name for p in FUNCTIONS_DIR.glob("*/index.py"))


# Packages that come in only as another's dependency are shown under it.
_FAMILY = {
    "urllib3": "requests",
    "charset_normalizer": "requests",
    "idna": "requests",
    "certifi": "requests",
    "sentinels": "mongomock",
    "packaging": "mongomock",
    "pytz": "mongomock",
    "annotated_types": "pydantic",
    "pydantic_core": "pydantic",
    "typing_extensions": "pydantic",
    "typing_inspection": "pydantic",
    "dotenv": "pydantic_settings",
    "cython_runtime": "",
}


def _family(top: str) -> str:
    return _FAMILY.get(top, top)


def _third_party(modules: Any) -> set[str]:
    tops = {name.split(".")[0] for name in modules}
    return {t for t in tops if t not in _STDLIB and not t.startswith("_") and t != "index"}


def _shown(packages: set[str]) -> str:
    return ", ".join(sorted({_family(p) for p in packages} - {"", "caiyun"})) or "—"


def _first_event(module: Any, name: str) -> dict[str, Any]:
    handler = module.main_handler
    if handler.timer is not None:
        return {"Type": "Timer", "TriggerName": "bench", "Time": "2026-03-02T02:00:00Z"}
    if handler.http is not None:
        return {
            "httpMethod": "GET",
            "path": f"/{name}",
            "headers": {},
            "body": "",
            "requestContext": {"sourceIp": "127.0.0.1", "requestId": "bench"},
        }
    action = next(iter(handler.actions), "none")
    return {"action": action, "userInfo": {"openId": "o-bench-cold", "appId": "wx-bench"}}


def child(kind: str, name: str | None) -> None:
    """One cold process: time the import (and, for a function, its first two calls)."""
    import contextlib
    import importlib.util
    import io
    import time

    before = set(sys.modules)
    started = time.perf_counter()
    if kind in ("baseline", "floor"):
        import pydantic  # noqa: F401
        import pymongo  # noqa: F401

        if kind == "floor":
            from pydantic import BaseModel  # noqa: F401

        child_result(
            {
                "import_s": time.perf_counter() - started,
                "modules": sorted(_third_party(set(sys.modules) - before)),
            }
        )
        return
    assert name is not None
    path = FUNCTIONS_DIR / name / "index.py"
    spec = importlib.util.spec_from_file_location("index", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["index"] = module
    spec.loader.exec_module(module)
    import_s = time.perf_counter() - started
    after_import = set(sys.modules)
    event = _first_event(module, name)
    sink = io.StringIO()  # the runtime's log line goes to stdout; keep ours clean
    with contextlib.redirect_stdout(sink):
        started = time.perf_counter()
        reply = module.main_handler(dict(event), {"request_id": "bench-cold"})
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        module.main_handler(dict(event), {"request_id": "bench-warm"})
        second_s = time.perf_counter() - started
    code = reply.get("error", {}).get("code") if isinstance(reply, dict) else None
    if isinstance(reply, dict) and "statusCode" in reply:
        code = f"HTTP {reply['statusCode']}"
    child_result(
        {
            "import_s": import_s,
            "first_s": first_s,
            "second_s": second_s,
            "first_reply": code or "OK",
            "modules": sorted(_third_party(after_import - before)),
            "first_call_modules": sorted(_third_party(set(sys.modules) - after_import)),
        }
    )


def _importtime(argv: list[str]) -> dict[str, int]:
    """Self time (µs) of every module ``python -X importtime <argv>`` imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found: dict[str, int] = {}
    for line in done.stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match:
            found[match.group(4)] = int(match.group(1))
    return found


def _group(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "caiyun" and len(parts) > 1:
        return ".".join(parts[:2])
    return _family(parts[0]) or parts[0]


def _where_extra_goes(base: dict[str, int], mine: dict[str, int], top: int = 4) -> str:
    totals: dict[str, int] = defaultdict(int)
    for module, self_us in mine.items():
        if module not in base and module != "index":
            totals[_group(module)] += self_us
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{name} {us / 1000:.0f}" for name, us in ranked)


def _argv(kind: str, name: str | None = None) -> list[str]:
    argv = ["-m", "bench.imports", "--child", kind]
    return [*argv, name] if name else argv


def run(runs: int = 7) -> dict[str, Any]:
    """Measure every function; print the table; return the figures."""
    names = function_names()
    # Warm the bytecode caches once, untimed, so every timed run starts from .pyc files.
    run_child(_argv("baseline"), 120)
    for name in names:
        run_child(_argv("function", name), 120)

    # Rounds, each timing the baseline, the floor and every function once: a machine whose
    # load changes during the run then weighs on both sides of every ratio alike.
    samples: dict[str, list[tuple[dict[str, Any] | None, str]]] = {
        key: [] for key in ("baseline", "floor", *names)
    }
    for _ in range(runs):
        samples["baseline"].append(run_child(_argv("baseline"), 120))
        samples["floor"].append(run_child(_argv("floor"), 120))
        for name in names:
            samples[name].append(run_child(_argv("function", name), 120))
    base_runs = [r for r, _ in samples["baseline"] if r]
    base = median([r["import_s"] for r in base_runs])
    base_modules = set(base_runs[0]["modules"]) if base_runs else set()
    floor = median([r["import_s"] for r, _ in samples["floor"] if r])
    base_times = _importtime(["-c", "import pymongo, pydantic"])

    rows, figures, over = [], {}, []
    for name in names:
        results = samples[name]
        ok = [r for r, _ in results if r]
        if not ok:
            rows.append([name, "failed: " + results[0][1], "", "", "", "", "", "", ""])
            continue
        imp = median([r["import_s"] for r in ok])
        first = median([r["first_s"] for r in ok])
        second = median([r["second_s"] for r in ok])
        ratio = imp / base if base else None
        extra = set(ok[0]["modules"]) - base_modules
        later = set(ok[0]["first_call_modules"])
        index = str(FUNCTIONS_DIR / name / "index.py")
        mine = _importtime(
            [
                "-c",
                "import importlib.util,sys;"
                f"s=importlib.util.spec_from_file_location('index',{index!r});"
                "m=importlib.util.module_from_spec(s);sys.modules['index']=m;s.loader.exec_module(m)",
            ]
        )
        flag = "" if ratio is not None and ratio <= TARGET_RATIO else " OVER"
        if flag:
            over.append(name)
        rows.append(
            [
                name,
                f"{imp * 1000:.0f}",
                f"{fmt_x(ratio)}{flag}",
                f"{first * 1000:.0f} ({ok[0]['first_reply']})",
                f"{second * 1000:.1f}",
                _shown(extra),
                _shown(later),
                _where_extra_goes(base_times, mine),
            ]
        )
        figures[name] = {
            "import_ms": imp * 1000,
            "ratio": ratio,
            "first_call_ms": first * 1000,
            "second_call_ms": second * 1000,
            "extra_at_import": sorted(extra),
            "extra_at_first_call": sorted(later),
        }
    print_table(
        f"Cold import of functions/<name>/index.py (median of {runs} fresh processes; "
        f"baseline `import pymongo, pydantic` = {base * 1000:.0f} ms; target ≤ {TARGET_RATIO}×)",
        [
            "function",
            "import ms",
            "× baseline",
            "1st call ms (reply)",
            "2nd call ms",
            "extra at import",
            "+ at 1st call",
            "where the extra goes (ms self)",
        ],
        rows,
    )
    note(
        f"Floor for any function: `import pymongo, pydantic; from pydantic import BaseModel` = "
        f"{floor * 1000:.0f} ms ({fmt_x(floor / base if base else None)} baseline): pydantic "
        "loads its model machinery lazily, so the baseline does not include it."
    )
    if over:
        note(f"Over target: {', '.join(over)}.")
    return {
        "baseline_ms": base * 1000,
        "floor_ms": floor * 1000,
        "functions": figures,
        "over": over,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs="+", metavar=("KIND", "NAME"))
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1] if len(args.child) > 1 else None)
        return 0
    print(json.dumps(run(args.runs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
