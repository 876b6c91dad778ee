"""`caiyun db ensure-indexes` and `caiyun db add-admin`: the production bootstrap commands.

They talk to MONGODB_URI; here they run on the embedded engine through --data-dir, and the
refusals are checked with MONGODB_URI unset.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from caiyun.catalog import declared_collections
from caiyun.cli import main
from caiyun.data.embedded import EmbeddedEngine
from caiyun.stores import staff
from caiyun.stores.accounts import ACCOUNTS

PHONE = "13800007777"


@pytest.fixture
def no_mongodb_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.delenv("CAIYUN_MONGODB_URI", raising=False)


def read_db(data_dir: Path) -> EmbeddedEngine:
    return EmbeddedEngine(data_dir)


def test_ensure_indexes_refuses_without_mongodb_uri_or_data_dir(
    no_mongodb_uri: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["db", "ensure-indexes"]) == 1
    err = capsys.readouterr().err
    assert "MONGODB_URI" in err and "--data-dir" in err
    assert "Traceback" not in err


def test_ensure_indexes_creates_every_declared_index_and_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "ensure-indexes", "--data-dir", str(tmp_path)]) == 0
    first = capsys.readouterr().out
    for spec in declared_collections():
        if spec.indexes:
            assert f"\n{spec.name}\n" in first
    assert "phone_1: phone 1 unique" in first
    # Idempotent: a second run changes nothing and says the same.
    assert main(["db", "ensure-indexes", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == first


def test_add_admin_makes_a_company_wide_admin_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = [
        "db",
        "add-admin",
        "--phone",
        PHONE,
        "--name",
        " 李管理 ",
        "--data-dir",
        str(tmp_path),
    ]
    assert main(command) == 0
    assert "新账号 / new account" in capsys.readouterr().out
    assert main(command) == 0
    assert "已有账号 / existing account" in capsys.readouterr().out
    engine = read_db(tmp_path)
    try:
        db = engine.database
        accounts = list(db[ACCOUNTS].find({"phone": PHONE}))
        assert len(accounts) == 1
        member = staff.get(db, accounts[0]["_id"])
        assert member is not None
        assert member["role"] == "admin"
        assert member["all_communities"] is True
        assert member["name"] == "李管理"
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("phone", "name"),
    [("12345", "李管理"), ("23800007777", "李管理"), (PHONE, "   "), (PHONE, "名" * 33)],
)
def test_add_admin_rejects_a_bad_phone_or_name_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], phone: str, name: str
) -> None:
    data_dir = tmp_path / "data"
    command = ["db", "add-admin", "--phone", phone, "--name", name, "--data-dir", str(data_dir)]
    assert main(command) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert not data_dir.exists()


def test_add_admin_refuses_without_mongodb_uri_or_data_dir(
    no_mongodb_uri: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "add-admin", "--phone", PHONE, "--name", "李管理"]) == 1
    assert "MONGODB_URI" in capsys.readouterr().err


def test_a_data_dir_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["db", "ensure-indexes", "--data-dir", str(not_a_dir)]) == 1
    assert "--data-dir" in capsys.readouterr().err


def test_add_admin_refuses_a_database_without_the_unique_phone_index() -> None:
    from caiyun.cli import CliError
    from caiyun.cli.db import _require_account_indexes

    engine = EmbeddedEngine(None)  # no ensure_indexes: a MongoDB nobody has prepared
    try:
        with pytest.raises(CliError, match="ensure-indexes"):
            _require_account_indexes(engine.database)
    finally:
        engine.close()


@pytest.mark.skipif(not os.environ.get("MONGODB_URI"), reason="needs MONGODB_URI")
def test_on_mongodb_add_admin_waits_for_ensure_indexes_then_bootstraps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pymongo import MongoClient

    db_name = f"caiyun_cli_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("CAIYUN_DB_NAME", db_name)
    client: MongoClient = MongoClient(os.environ["MONGODB_URI"])
    try:
        assert main(["db", "add-admin", "--phone", PHONE, "--name", "李管理"]) == 1
        assert "ensure-indexes" in capsys.readouterr().err
        assert client[db_name][ACCOUNTS].count_documents({}) == 0
        assert main(["db", "ensure-indexes"]) == 0
        assert main(["db", "add-admin", "--phone", PHONE, "--name", "李管理"]) == 0
        account = client[db_name][ACCOUNTS].find_one({"phone": PHONE})
        assert account is not None
        assert staff.get(client[db_name], account["_id"])["role"] == "admin"
    finally:
        client.drop_database(db_name)
        client.close()
