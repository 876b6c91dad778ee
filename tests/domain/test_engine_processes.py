"""Several processes on one embedded data directory: unique rules hold across them, a directory
that already breaks one still opens and says what to fix, a writer waits for another's lock only
so long, and the write-ahead log stays small."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_START
from pymongo.errors import DuplicateKeyError

from caiyun import cli
from caiyun.catalog import ensure_indexes, open_database
from caiyun.data.embedded import DatabaseBusy, EmbeddedEngine
from caiyun.sandbox.environment import open_sandbox
from caiyun.sandbox.functions import handler
from caiyun.services import install_services
from caiyun.settings import Settings
from caiyun.stores.accounts import ensure_account

PHONES = 150
WRITERS = 3

# Each writer process opens the directory as `caiyun dev` or `caiyun admin add-staff` does, waits
# for the others at the start line, then creates the same phones in the same order.
_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from caiyun.catalog import open_database
    from caiyun.stores.accounts import ensure_account
    from caiyun.settings import Settings
    data_dir, start_line, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    phones, writers = int(sys.argv[4]), int(sys.argv[5])
    db = open_database(Settings(env="sandbox", data_dir=data_dir, db_busy_timeout_s=60))
    (start_line / me).touch()
    while len(list(start_line.iterdir())) < writers:
        time.sleep(0.001)
    from datetime import datetime, timezone
    now = datetime(2026, 11, 25, 2, tzinfo=timezone.utc)
    made = sum(ensure_account(db, f"1380000{i:04d}", now)[1] for i in range(phones))
    print(made)
    """
)


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(env="sandbox", data_dir=str(data_dir), **overrides)


def test_processes_racing_to_create_one_phone_make_exactly_one_account(tmp_path: Path) -> None:
    data_dir, start_line = tmp_path / "data", tmp_path / "start"
    start_line.mkdir()
    open_database(settings_for(data_dir)).engine.close()  # the directory and its schema exist
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, *map(str, (data_dir, start_line, n, PHONES, WRITERS))],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(WRITERS)
    ]
    created = []
    for writer in writers:
        out, _ = writer.communicate(timeout=300)
        assert writer.returncode == 0
        created.append(int(out))

    db = open_database(settings_for(data_dir))
    try:
        accounts = list(db["accounts"].find({}, {"phone": 1}))
        assert db.engine.clashes == []
    finally:
        db.engine.close()
    assert sorted(a["phone"] for a in accounts) == [f"1380000{i:04d}" for i in range(PHONES)]
    # Every phone was created by exactly one of the racing processes.
    assert sum(created) == PHONES


def plant_duplicate_phone(data_dir: Path) -> None:
    """Two accounts for one phone, as the race left them before writes held the lock."""
    engine = EmbeddedEngine(data_dir)  # no indexes yet: nothing stops the second insert
    engine.database["accounts"].insert_many(
        [
            {"_id": "acc-old", "phone": "13800000001", "wx": {}},
            {"_id": "acc-new", "phone": "13800000001", "wx": {}},
            {"_id": "acc-other", "phone": "13800000002", "wx": {}},
        ]
    )
    engine.close()


def test_a_directory_holding_a_duplicate_phone_opens_and_names_the_clash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    plant_duplicate_phone(data_dir)

    with caplog.at_level(logging.WARNING, logger="caiyun.data"):
        db = open_database(settings_for(data_dir))
    try:
        [clash] = db.engine.clashes
        assert (clash.collection, clash.values, set(clash.ids)) == (
            "accounts",
            {"phone": "13800000001"},
            {"acc-old", "acc-new"},
        )
        assert "acc-old" in caplog.text and "remove-duplicate" in caplog.text
        # The clashing accounts keep working (a login updates its account) ...
        db["accounts"].update_one({"_id": "acc-new"}, {"$set": {"last_login_at": TEST_START}})
        assert ensure_account(db, "13800000001", TEST_START)[1] is False
        # ... but nothing new may join the clash, and the rule holds for every other phone.
        with pytest.raises(DuplicateKeyError):
            db["accounts"].insert_one({"_id": "acc-third", "phone": "13800000001"})
        with pytest.raises(DuplicateKeyError):
            db["accounts"].update_one({"_id": "acc-other"}, {"$set": {"phone": "13800000001"}})
    finally:
        db.engine.close()


def test_the_cli_says_which_records_clash_and_removes_the_extra_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    plant_duplicate_phone(data_dir)

    assert cli.main(["db", "ensure-indexes", "--data-dir", str(data_dir)]) == 0
    warned = capsys.readouterr().err
    assert "acc-old" in warned and "acc-new" in warned and "13800000001" in warned
    assert "caiyun db remove-duplicate --collection accounts" in warned

    remove = ["db", "remove-duplicate", "--data-dir", str(data_dir), "--collection", "accounts"]
    # acc-other breaks no rule: refused, nothing removed.
    assert cli.main([*remove, "--id", "acc-other"]) == 1
    assert "breaks no unique index" in capsys.readouterr().err
    assert cli.main([*remove, "--id", "acc-new"]) == 0
    capsys.readouterr()

    db = open_database(settings_for(data_dir))
    try:
        assert db.engine.clashes == []
        assert sorted(a["_id"] for a in db["accounts"].find({})) == ["acc-old", "acc-other"]
    finally:
        db.engine.close()


def hold_write_lock(data_dir: Path) -> sqlite3.Connection:
    """Another process's writer in the middle of a long write."""
    other = sqlite3.connect(data_dir / "caiyun.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_writer_waits_for_another_processs_lock_only_as_long_as_the_setting(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    db = open_database(settings_for(data_dir, db_busy_timeout_s=0.2))
    db["staff"].insert_one({"_id": "s1", "role": "guard"})
    other = hold_write_lock(data_dir)
    try:
        with pytest.raises(DatabaseBusy) as refused:
            db["staff"].insert_one({"_id": "s2", "role": "guard"})
        assert refused.value.code == "UNAVAILABLE"
        assert refused.value.to_envelope()["error"]["message"].startswith("数据库正忙")
        assert db["staff"].find_one({"_id": "s1"}) is not None  # reads do not wait
    finally:
        other.rollback()
        other.close()
    db["staff"].insert_one({"_id": "s2", "role": "guard"})  # the refused write changed nothing
    assert db["staff"].count_documents({}) == 2
    db.engine.close()


def test_a_function_answers_unavailable_and_the_cli_says_why_while_the_lock_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CAIYUN_DB_BUSY_TIMEOUT_S", "0.2")
    with open_sandbox(data_dir) as sandbox:
        install_services(sandbox.services)
        other = hold_write_lock(data_dir)
        try:
            reply = handler("login")(
                {"action": "send_code", "phone": "13800000009", "userInfo": {"openId": "o-1"}},
                {"request_id": "busy"},
            )
        finally:
            other.rollback()
            other.close()
            install_services(None)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "UNAVAILABLE"
    assert reply["error"]["details"] == {"retryable": True}

    other = hold_write_lock(data_dir)
    try:
        status = cli.main(
            [
                "admin",
                "add-staff",
                "--phone",
                "13900000009",
                "--name",
                "周敏",
                "--role",
                "admin",
                "--data-dir",
                str(data_dir),
            ]
        )
    finally:
        other.rollback()
        other.close()
    assert status == 1
    assert "数据库正忙" in capsys.readouterr().err


def test_the_write_ahead_log_is_checkpointed_while_another_process_reads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    writer = EmbeddedEngine(data_dir, wal_limit_bytes=256 * 1024)
    reader = EmbeddedEngine(data_dir)
    wal = data_dir / "caiyun.sqlite3-wal"
    largest = 0
    try:
        for batch in range(40):
            writer.database["notes"].insert_many(
                [{"_id": f"{batch}-{i}", "text": "x" * 1000} for i in range(100)]
            )
            assert reader.database["notes"].count_documents({}) == (batch + 1) * 100
            largest = max(largest, wal.stat().st_size)
    finally:
        writer.close()
        reader.close()
    # 4 MB written; the log never held much more than one batch past the limit.
    assert largest < 1024 * 1024


def test_a_second_process_catches_up_on_changed_documents_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first, second = EmbeddedEngine(data_dir), EmbeddedEngine(data_dir)
    try:
        ensure_indexes(first.database)
        ensure_indexes(second.database)
        first.database["accounts"].insert_many(
            [{"_id": f"a{i}", "phone": f"1380000{i:04d}"} for i in range(50)]
        )
        assert second.database["accounts"].count_documents({}) == 50
        kept = second.store("accounts")._documents["a1"]
        first.database["accounts"].update_one({"_id": "a2"}, {"$set": {"name": "张三"}})
        first.database["accounts"].delete_one({"_id": "a3"})

        assert second.database["accounts"].find_one({"_id": "a2"})["name"] == "张三"
        assert second.database["accounts"].find_one({"_id": "a3"}) is None
        # Unchanged documents were not read again (the same objects are still held).
        assert second.store("accounts")._documents["a1"] is kept
        with pytest.raises(DuplicateKeyError):  # and the indexes know the new state
            second.database["accounts"].insert_one({"_id": "x", "phone": "13800000002"})
        second.database["accounts"].insert_one({"_id": "y", "phone": "13800000003"})
    finally:
        first.close()
        second.close()
