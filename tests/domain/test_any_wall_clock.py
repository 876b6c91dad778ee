"""The time rules hold whatever the machine's clock says: every test clock starts at TEST_START
(conftest.py), so the suite passes at any hour of any day CI happens to run it.

Proven two ways: no test reads the wall clock, and the time-rule tests pass in processes whose
clock Debian's faketime (libfaketime, preloaded) has moved to the awkward moments: past midnight,
before the reminder hours, at noon, late at night, each on the last day of a month.
`scripts/test-any-hour` runs the whole suite the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from caiyun.clock import SHANGHAI

ROOT = Path(__file__).resolve().parents[2]

# Each hour the issue names, each on the last day of a month (one also the last of the year).
MOMENTS = [
    datetime(2026, 12, 31, 0, 30, tzinfo=SHANGHAI),
    datetime(2027, 1, 31, 8, 30, tzinfo=SHANGHAI),
    datetime(2027, 2, 28, 12, 0, tzinfo=SHANGHAI),
    datetime(2027, 4, 30, 23, 30, tzinfo=SHANGHAI),
]
# The tests of rules that depend on the hour, the business day or the date: reminder hours and
# windows, the 3-day auto-close and the daily auto-debit, SMS limits per Shanghai day, visitor
# passes valid for a date.
TIME_RULE_TESTS = [
    "tests/domain/test_reminders_and_staff_bills.py",
    "tests/domain/test_scheduler_auto_close.py",
    "tests/domain/test_sms_code_rules.py",
    "tests/domain/test_visitor_pass.py",
]
WALL_CLOCK_READS = re.compile(
    r"datetime\.(now|utcnow|today)\(|date\.today\(|time\.time\(\)|time\.localtime\("
)


def test_no_test_reads_the_wall_clock() -> None:
    readers = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if WALL_CLOCK_READS.search(line):
                readers.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert readers == []


def faketime_command(moment: datetime) -> list[str]:
    """Run under Debian's faketime with the process clock starting at ``moment`` (then ticking)."""
    utc = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return ["faketime", "-f", f"@{utc}"]


@pytest.mark.skipif(
    shutil.which("faketime") is None,
    reason="Debian's faketime is not installed (scripts/test installs it where it can: "
    "apt-get install faketime)",
)
def test_the_time_rule_tests_pass_at_any_hour_on_the_last_day_of_a_month() -> None:
    environment = {**os.environ, "TZ": "UTC"}
    runs = {
        moment: subprocess.Popen(
            [
                *faketime_command(moment),
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
                *TIME_RULE_TESTS,
            ],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for moment in MOMENTS
    }
    failed = {}
    for moment, run in runs.items():
        output, _ = run.communicate(timeout=600)
        if run.returncode != 0:
            failed[moment.isoformat()] = output[-3000:]
    assert failed == {}


@pytest.mark.skipif(shutil.which("faketime") is None, reason="Debian's faketime is not installed")
def test_faketime_really_moves_a_python_process_clock() -> None:
    # Without this, the test above could pass by running at the real time.
    moment = MOMENTS[0]
    printed = subprocess.run(
        [*faketime_command(moment), sys.executable, "-c", "import time; print(time.time())"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    ).stdout
    assert abs(float(printed) - moment.timestamp()) < 60
