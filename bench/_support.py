"""What every part of the harness shares: the database under test, command counting, tables.

The database is real MongoDB when ``MONGODB_URI`` is set (a database named ``caiyun_bench`` is
dropped and re-created; nothing else is touched), else a fresh in-memory embedded engine (the
tests' engine: mongomock behind the engine lock, no SQLite file).

Commands are counted two ways:

* always, by :class:`CountingDatabase`, a proxy around the ``Database`` handed to
  ``build_services(settings, db=...)``: one command per collection method called (``find`` is
  one command however many documents it returns), with the time spent in it, cursor iteration
  included;
* on MongoDB also by a ``pymongo.monitoring.CommandListener``: the commands that really went
  over the wire (``getMore`` included; handshakes and heartbeats left out).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = ROOT / "functions"
BENCH_DB = "caiyun_bench"
CHILD_MARK = "BENCH_JSON "

# Every purpose the domain pushes for, configured as in production: a notification to an
# account with an openid then tries to spend a consent (one more command).
TEMPLATES = {
    key: f"tpl-{key}"
    for key in (
        "bill",
        "reminder",
        "payment",
        "repair",
        "repair_assigned",
        "repair_filed",
        "complaint",
        "complaint_filed",
        "visitor",
        "notice",
    )
}

# Wire commands that are the driver's own business, not the action's.
_DRIVER_COMMANDS = frozenset(
    {"hello", "ismaster", "isMaster", "ping", "endSessions", "saslStart", "saslContinue"}
)


def mongo_uri() -> str | None:
    """The MongoDB the harness runs against, or None for the embedded engine."""
    return os.environ.get("MONGODB_URI") or os.environ.get("CAIYUN_MONGODB_URI") or None


def engine_name() -> str:
    """``mongodb`` or ``embedded``."""
    return "mongodb" if mongo_uri() else "embedded"


# Counting.


class CommandLog:
    """Commands seen since the last :meth:`reset`, by ``collection.method``, and their time."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.wire: Counter[str] = Counter()
        self.seconds = 0.0
        self.thread = threading.get_ident()

    def reset(self) -> None:
        """Start counting afresh (in the calling thread, for the wire listener)."""
        self.calls = Counter()
        self.wire = Counter()
        self.seconds = 0.0
        self.thread = threading.get_ident()

    @property
    def count(self) -> int:
        """Commands counted: on the wire when a listener saw any, else method calls."""
        return sum(self.wire.values()) if self.wire else sum(self.calls.values())

    @property
    def stand_ins(self) -> int:
        """Commands on the sandbox's own collections (``sandbox_*``: its SMS outbox stands in
        for the SMS provider's HTTP call), which a deployment does not send."""
        source = self.wire or self.calls
        return sum(n for name, n in source.items() if name.startswith("sandbox_"))

    def breakdown(self, limit: int = 6) -> str:
        """The commands as ``3×accounts.find_one, memberships.find`` (most frequent first)."""
        source = self.wire or self.calls
        parts = [f"{n}×{name}" if n > 1 else name for name, n in source.most_common(limit)]
        if len(source) > limit:
            parts.append("…")
        return ", ".join(parts)


class _CountingCursor:
    """A cursor whose iteration time is charged to the command that made it."""

    def __init__(self, cursor: Any, log: CommandLog) -> None:
        self._cursor = cursor
        self._log = log

    def __iter__(self) -> _CountingCursor:
        return self

    def __next__(self) -> Any:
        started = time.perf_counter()
        try:
            return next(self._cursor)
        finally:
            self._log.seconds += time.perf_counter() - started

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._cursor, attr)
        if not callable(target):
            return target

        def chained(*args: Any, **kwargs: Any) -> Any:
            result = target(*args, **kwargs)
            return self if result is self._cursor else result

        return chained


_CURSOR_METHODS = frozenset({"find", "aggregate", "find_raw_batches", "list_indexes"})


class CountingCollection:
    """A collection proxy: every method call is one command."""

    def __init__(self, collection: Any, name: str, log: CommandLog) -> None:
        self._collection = collection
        self._name = name
        self._log = log

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._collection, attr)
        if not callable(target):
            return target
        log, key = self._log, f"{self._name}.{attr}"

        def counted(*args: Any, **kwargs: Any) -> Any:
            log.calls[key] += 1
            started = time.perf_counter()
            try:
                result = target(*args, **kwargs)
            finally:
                log.seconds += time.perf_counter() - started
            if attr in _CURSOR_METHODS:
                return _CountingCursor(result, log)
            return result

        return counted


class CountingDatabase:
    """A proxy around a pymongo ``Database`` (or the embedded one) that counts commands."""

    def __init__(self, db: Any, log: CommandLog) -> None:
        self._db = db
        self.log = log

    @property
    def raw(self) -> Any:
        """The database behind the proxy (for set-up that must not be counted)."""
        return self._db

    def __getitem__(self, name: str) -> CountingCollection:
        return CountingCollection(self._db[name], name, self.log)

    def get_collection(self, name: str) -> CountingCollection:
        """The named collection, counted."""
        return self[name]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._db, attr)


def install_wire_listener(log: CommandLog) -> None:
    """Count MongoDB wire commands into ``log`` (call before any MongoClient is created).

    Only commands issued from the thread that last reset ``log`` count: the fake ICBC and fake
    WeChat servers share the client from their own threads.
    """
    from pymongo import monitoring

    class _Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name in _DRIVER_COMMANDS or threading.get_ident() != log.thread:
                return
            target = event.command.get(event.command_name)
            if not isinstance(target, str):
                target = event.command.get("collection", "?")
            log.wire[f"{target}.{event.command_name}"] += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            return None

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            return None

    monitoring.register(_Listener())


# The database under test.


class FixedClock:
    """A clock that says what it is told (the scheduler and import benches)."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


# 10:00 in Shanghai: inside the payment reminders' daytime window.
BENCH_NOW = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)


def bench_settings(**overrides: Any) -> Any:
    """Sandbox settings on the bench database, with every push template configured."""
    from caiyun.settings import Settings

    values: dict[str, Any] = {
        "env": "sandbox",
        "data_dir": "",
        "db_name": BENCH_DB,
        "wechat_templates": TEMPLATES,
    }
    values.update(overrides)
    return Settings(**values)


def open_raw_db(settings: Any) -> Any:
    """A fresh, empty database with every declared index. The embedded engine expires TTL
    documents by the bench's clock: by the wall clock, records a bench writes to last until
    past ``BENCH_NOW`` (reminder claims, rate-limit counters) would vanish as they are written."""
    from caiyun.catalog import ensure_indexes, open_database

    db = open_database(settings, clock=FixedClock(BENCH_NOW))
    if mongo_uri():
        db.client.drop_database(db.name)
        ensure_indexes(db)
    return db


def drop_raw_db(db: Any) -> None:
    """Remove the bench database from MongoDB (the embedded one just goes away)."""
    if mongo_uri():
        db.client.drop_database(db.name)
        db.client.close()


def bulk_load(db: Any, collection: str, docs: Iterable[dict[str, Any]]) -> int:
    """Put documents in place for a bench, as fast as the engine allows; not measured.

    MongoDB: unordered ``insert_many`` in chunks. Embedded: straight into the collection's store,
    as the engine's own reload from SQLite does (BSON round trip, so datetimes are stored as the
    engine stores them; the store keeps its hash indexes), skipping mongomock's insert checks;
    the bench data is unique by construction.
    """
    import bson

    count = 0
    if mongo_uri():
        chunk: list[dict[str, Any]] = []
        for doc in docs:
            chunk.append(doc)
            if len(chunk) == 10_000:
                db[collection].insert_many(chunk, ordered=False)
                count += len(chunk)
                chunk = []
        if chunk:
            db[collection].insert_many(chunk, ordered=False)
            count += len(chunk)
        return count
    engine = db.engine
    with engine._lock:
        store = engine.mongomock_collection(collection)._store
        for doc in docs:
            store[doc["_id"]] = bson.decode(bson.encode(doc))
            count += 1
    return count


# Figures.


def median(values: Sequence[float]) -> float:
    """The median (0 for none)."""
    return statistics.median(values) if values else 0.0


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def power_fit(points: Sequence[tuple[float, float]]) -> float:
    """The exponent k of y ∝ x**k, least squares in log-log over the last three points
    (1.0, a straight line, when fewer than two points can tell)."""
    usable = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0][-3:]
    if len(usable) < 2:
        return 1.0
    mx = sum(x for x, _ in usable) / len(usable)
    my = sum(y for _, y in usable) / len(usable)
    spread = sum((x - mx) ** 2 for x, _ in usable)
    if spread == 0:
        return 1.0
    return sum((x - mx) * (y - my) for x, y in usable) / spread


def extrapolate(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """y at ``target`` along :func:`power_fit`, from the last point (None without points)."""
    usable = [(x, y) for x, y in points if x > 0 and y > 0]
    if not usable:
        return None
    x, y = usable[-1]
    return y * (target / x) ** power_fit(usable)


def doubling(start: int, scale: int) -> list[int]:
    """start, 2·start, 4·start … below scale, then scale."""
    sizes, n = [], min(start, scale)
    while n < scale:
        sizes.append(n)
        n *= 2
    sizes.append(scale)
    return sizes


def grow_within_budget(
    module: str,
    scale: int,
    budget: float,
    start: int,
    first_extra: Sequence[str] = (),
    work_keys: Sequence[str] = ("s",),
) -> tuple[list[dict[str, Any]], str]:
    """Run ``python -m <module> --child N`` at doubling sizes up to ``scale`` while the next
    size is expected to fit in ``budget`` seconds; returns (results, why it stopped early).

    On MongoDB only ``scale`` runs. Each result gets ``wall`` (the child's whole time). The
    first child also gets ``first_extra`` arguments (an expensive extra pass); it reports that
    pass's time as ``extra_s`` so the guess for the next size leaves it out.
    """
    sizes = [scale] if mongo_uri() else doubling(start, scale)
    points: list[dict[str, Any]] = []
    began = time.perf_counter()
    for n in sizes:
        elapsed = time.perf_counter() - began
        if points and not mongo_uri():
            guess = _next_cost(points, n, work_keys)
            if elapsed + guess > budget:
                return points, (
                    f"stopped before N={n:,}: that size would take about {fmt_s(guess)} "
                    f"(budget {fmt_s(budget)}, {fmt_s(elapsed)} used)"
                )
        argv = ["-m", module, "--child", str(n)]
        if mongo_uri() or not points:
            argv.extend(first_extra)
        started = time.perf_counter()
        result, error = run_child(argv, max(budget - elapsed, 30.0) * 1.5)
        if result is None:
            return points, f"N={n:,} did not finish: {error}"
        result["wall"] = time.perf_counter() - started
        points.append(result)
    return points, ""


def _next_cost(points: list[dict[str, Any]], n: int, work_keys: Sequence[str]) -> float:
    # The timed work grows along the power law seen so far (quadratic until two sizes are
    # known: mongomock scans whole collections); the rest (set-up) grows linearly.
    last = points[-1]
    work = sum(last[key] for key in work_keys)
    k = power_fit([(p["n"], sum(p[key] for key in work_keys)) for p in points])
    grow = n / last["n"]
    rest = max(last["wall"] - work - last.get("extra_s", 0.0), 0.0)
    return work * grow ** (max(k, 1.0) if len(points) > 1 else 2.0) + rest * grow


def rss_now_mb() -> float:
    """This process's resident set size now, in MB (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def rss_peak_mb() -> float:
    """This process's peak resident set size so far, in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux


class RssSampler:
    """The peak growth of this process's RSS while the ``with`` block runs (sampled every 5 ms
    by a thread: no slowdown of the code measured, unlike tracemalloc)."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.start_mb = self.peak_mb = rss_now_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_now_mb())

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, rss_now_mb())

    @property
    def growth_mb(self) -> float:
        """Peak RSS during the block minus RSS at its start."""
        return self.peak_mb - self.start_mb


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 100:
        return f"{seconds:,.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def fmt_ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.2f}"


def fmt_n(value: float | None) -> str:
    return "—" if value is None else f"{round(value):,}"


def fmt_x(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}×"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table (GitHub markdown, so it pastes into README.md as it is)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], _width(cell))
    print(f"\n### {title}\n")
    print("| " + " | ".join(_pad(h, w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def _width(text: str) -> int:
    # CJK characters take two columns in a terminal.
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def note(text: str) -> None:
    """A line under a table."""
    print(text)
    sys.stdout.flush()


# Children: the measurements that need a process of their own (cold imports, RSS, time caps).


def child_env() -> dict[str, str]:
    """The environment a child runs with: ours, with the repo importable."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "layers" / "common")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_child(argv: Sequence[str], timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Run ``python <argv>`` and return (its BENCH_JSON result, problem or "")."""
    try:
        done = subprocess.run(
            [sys.executable, *argv],
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"stopped after {timeout:.0f} s"
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK) :]), ""
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return None, f"exit {done.returncode}: " + " / ".join(tail)


def child_result(result: dict[str, Any]) -> None:
    """Hand a child's result to the parent (the last line of stdout)."""
    sys.stdout.flush()
    print(CHILD_MARK + json.dumps(result), flush=True)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size``."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


Seeded = TypeVar("Seeded")


def seeded(doc: Seeded | None, what: str) -> Seeded:
    """A record of the demo data set the bench names; one missing is a broken seed."""
    if doc is None:
        raise RuntimeError(f"the demo data has no {what}")
    return doc
