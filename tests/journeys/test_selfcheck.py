"""`caiyun selfcheck`: every function's journey once, in a throwaway database it removes, with a
pass/fail table that names the server's error of a failing command."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pymongo.errors import OperationFailure

from caiyun.cli import main
from caiyun.packaging import function_names
from caiyun.selfcheck import Journey, JourneyStopped, Report

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^(通过 PASS|失败 FAIL)  (\w+)\.")


def rows(output: str) -> list[tuple[str, str]]:
    found = (ROW.match(line) for line in output.splitlines())
    return [(m.group(1), m.group(2)) for m in found if m]


def test_selfcheck_on_the_embedded_engine_walks_every_function_and_leaves_no_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "kept.txt").write_text("the operator's own file")

    status = main(["selfcheck", "--data-dir", str(data_dir)])

    out = capsys.readouterr().out
    assert status == 0, out
    checked = rows(out)
    assert {result for result, _ in checked} == {"通过 PASS"}
    assert {function for _, function in checked} == {"database", *function_names(ROOT)}
    assert re.search(r"^\d+ 通过 passed, 0 失败 failed$", out, re.M)
    # Only the table reaches stdout: the functions' own log lines are set aside.
    assert '"function"' not in out
    assert sorted(p.name for p in data_dir.iterdir()) == ["kept.txt"]


@pytest.mark.skipif(not os.environ.get("MONGODB_URI"), reason="needs MONGODB_URI")
def test_selfcheck_on_mongodb_drops_its_throwaway_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(os.environ["MONGODB_URI"])
    before = set(client.list_database_names())
    status = main(["selfcheck"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert set(client.list_database_names()) == before


def test_without_a_database_selfcheck_refuses_and_says_how(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.delenv("CAIYUN_MONGODB_URI", raising=False)
    assert main(["selfcheck"]) == 1
    assert "--data-dir" in capsys.readouterr().err


def test_a_failing_command_shows_the_servers_error_and_the_journey_goes_on() -> None:
    report = Report("test")
    journey = Journey(report, None)
    with pytest.raises(JourneyStopped), journey.step("bind_house", "my_houses"):
        raise OperationFailure(
            "Unrecognized expression '$getField'",
            code=168,
            details={"codeName": "InvalidPipelineOperator", "errmsg": "no $getField"},
        )
    with journey.step("repair", "categories"):
        pass
    table = report.table()
    assert "失败 FAIL  bind_house.my_houses" in table
    assert "InvalidPipelineOperator: no $getField" in table
    assert "通过 PASS  repair.categories" in table
    assert not report.ok
