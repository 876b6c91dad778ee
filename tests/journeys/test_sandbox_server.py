"""The local sandbox (`caiyun dev`) over real HTTP: what front-end developers and tests rely on."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import TEST_START
from sandbox_client import (
    TIMEOUT_S,
    Running,
    advance,
    api,
    appid_header,
    invoke,
    latest_code,
    login_by_api,
    login_by_invoke,
    send_code,
)

from caiyun import cli
from caiyun.adapters.sms import sandbox_outbox
from caiyun.sandbox.environment import (
    SANDBOX_APPID,
    SANDBOX_STAFF_APPID,
    SandboxRefused,
    open_sandbox,
)
from caiyun.sandbox.fake_wechat import FakeWeChat
from caiyun.sandbox.seed import DEMO_COMMUNITIES, DEMO_STAFF, seed_demo
from caiyun.sandbox.server import MAX_BODY_BYTES, SandboxServer, create_server
from caiyun.settings import Settings
from caiyun.stores import accounts, staff
from caiyun.stores import houses as house_store
from caiyun.stores.communities import COMMUNITIES
from caiyun.stores.houses import HOUSES

OWNER = DEMO_COMMUNITIES[0].houses[0].owner_phone
OTHER_OWNER = DEMO_COMMUNITIES[0].houses[1].owner_phone


def community_id(server: SandboxServer, name: str) -> str:
    """The id of a seeded community."""
    return server.services.db[COMMUNITIES].find_one({"name": name})["_id"]


def production_settings() -> Settings:
    """A settings object of the production profile.

    Copied from a sandbox profile rather than validated from scratch: what is under test is
    that the server refuses ``env="production"``, whatever secrets production comes to need.
    """
    return Settings(env="sandbox").model_copy(update={"env": "production"})


def test_seeded_owner_logs_in_over_invoke_with_the_code_from_the_outbox(sandbox: Running) -> None:
    base, openid = sandbox.url, "o-journey-owner"
    status, body = invoke(base, "login", {"action": "check_account", "phone": OWNER}, openid)
    assert (status, body) == (200, {"ok": True, "data": {"exists": True}})

    code = send_code(base, OWNER, openid)
    assert len(code) == 6 and code.isdigit()

    status, body = invoke(base, "login", {"action": "login", "phone": OWNER, "code": code}, openid)
    assert status == 200
    assert body["data"]["account"]["phone"] == OWNER
    assert body["data"]["first_login"] is True
    assert body["data"]["session_token"]

    status, me = invoke(base, "login", {"action": "me"}, openid)
    assert status == 200
    assert me["data"]["account_id"] == body["data"]["account"]["account_id"]
    assert me["data"]["name"] == DEMO_COMMUNITIES[0].houses[0].owner_name


def test_seeded_owner_logs_in_over_api_and_the_bearer_token_identifies_them(
    sandbox: Running,
) -> None:
    base = sandbox.url
    status, body = api(base, "login", {"action": "check_account", "phone": OWNER})
    assert (status, body["data"]) == (200, {"exists": True})

    token = login_by_api(base, OWNER)
    status, me = api(base, "login", {"action": "me"}, token)
    assert (status, me["data"]["phone"]) == (200, OWNER)

    status, anonymous = api(base, "login", {"action": "me"})
    assert (status, anonymous["error"]["code"]) == (401, "UNAUTHENTICATED")


def test_login_over_api_binds_the_openid_the_fake_wechat_gives_for_a_js_code(
    sandbox: Running,
) -> None:
    base = sandbox.url
    api(base, "login", {"action": "send_code", "phone": OWNER})
    code = latest_code(base, OWNER)
    status, body = api(
        base, "login", {"action": "login", "phone": OWNER, "code": code, "js_code": "wx-login-1"}
    )
    assert status == 200, body

    openid = FakeWeChat.openid_for(SANDBOX_APPID, "wx-login-1")
    status, me = invoke(base, "login", {"action": "me"}, openid)
    assert (status, me["data"]["phone"]) == (200, OWNER)


def test_a_staff_login_over_api_binds_the_staff_apps_openid_for_its_js_code(
    sandbox: Running,
) -> None:
    # The same WeChat user has another openid in each app: a staff login's js_code is exchanged
    # with the staff app's appid, and only the staff app's binding changes.
    base, guard = sandbox.url, "13800000005"  # 陈静, owner and guard
    login_by_invoke(base, guard, "o-chen-resident")
    advance(base, 61)
    api(base, "login", {"action": "send_code", "phone": guard})
    login = {"action": "login", "phone": guard, "code": latest_code(base, guard)}
    status, body = api(base, "login", {**login, "app": "staff", "js_code": "wx-login-2"})
    assert status == 200, body

    openid = FakeWeChat.openid_for(SANDBOX_STAFF_APPID, "wx-login-2")
    status, me = invoke(base, "login", {"action": "me"}, openid, **appid_header("staff"))
    assert (status, me["data"]["staff"]["role"]) == (200, "guard")
    assert invoke(base, "login", {"action": "me"}, openid)[0] == 401
    assert invoke(base, "login", {"action": "me"}, "o-chen-resident")[0] == 200


def test_identity_claimed_in_the_body_is_ignored_on_invoke_and_api(sandbox: Running) -> None:
    base = sandbox.url
    owner_openid = "o-real-owner"
    login_by_invoke(base, OWNER, owner_openid)
    claim = {"openId": owner_openid, "appId": SANDBOX_APPID}

    status, body = invoke(base, "login", {"action": "me", "userInfo": claim})
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")

    # The header wins over the body: a stranger's header is the identity, not the claim.
    status, body = invoke(base, "login", {"action": "me", "userInfo": claim}, "o-stranger")
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")

    other_openid = "o-other-owner"
    login_by_invoke(base, OTHER_OWNER, other_openid)
    status, body = invoke(base, "login", {"action": "me", "userInfo": claim}, other_openid)
    assert (status, body["data"]["phone"]) == (200, OTHER_OWNER)

    status, body = api(base, "login", {"action": "me", "userInfo": claim})
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")


def test_advancing_the_sandbox_clock_expires_a_code_after_300_seconds(sandbox: Running) -> None:
    base, openid = sandbox.url, "o-clock"
    stale = send_code(base, OWNER, openid)
    status, moved = advance(base, 301)
    assert (status, moved["data"]["offset_s"]) == (200, 301.0)
    assert datetime.fromisoformat(moved["data"]["now"]) >= TEST_START + timedelta(seconds=301)

    login = {"action": "login", "phone": OWNER, "app": "resident"}
    status, body = invoke(base, "login", {**login, "code": stale}, openid)
    assert (status, body["error"]["code"]) == (403, "CODE_INVALID")

    fresh = send_code(base, OWNER, openid)
    assert advance(base, 290)[0] == 200
    status, body = invoke(base, "login", {**login, "code": fresh}, openid)
    assert (status, body["ok"]) == (200, True)


def test_a_session_token_issued_after_the_clock_moved_identifies_its_owner(
    sandbox: Running,
) -> None:
    assert advance(sandbox.url, 3600)[0] == 200
    token = login_by_api(sandbox.url, OWNER)
    status, me = api(sandbox.url, "login", {"action": "me"}, token)
    assert (status, me.get("data", {}).get("phone")) == (200, OWNER), me


@pytest.mark.parametrize("seconds", [-1, "60", None, True, float("inf"), 4e8])
def test_the_sandbox_clock_refuses_to_move_back_or_by_a_non_number(
    sandbox: Running, seconds: Any
) -> None:
    reply = requests.post(
        f"{sandbox.url}/dev/clock",
        data=json.dumps({"advance_seconds": seconds}),
        timeout=TIMEOUT_S,
    )
    assert (reply.status_code, reply.json()["error"]["code"]) == (400, "INVALID_ARGUMENT")
    assert sandbox.server.sandbox.clock.offset_s == 0


def test_a_new_sandbox_clock_starts_where_asked_and_the_command_line_shares_it(
    sandbox: Running, data_dir: Path
) -> None:
    status, moved = advance(sandbox.url, 0)
    assert status == 200
    assert timedelta(0) <= datetime.fromisoformat(moved["data"]["now"]) - TEST_START
    assert datetime.fromisoformat(moved["data"]["now"]) - TEST_START < timedelta(minutes=5)

    phone = "13912345670"
    command = ["admin", "add-staff", "--phone", phone, "--name", "钱总", "--role", "admin"]
    assert cli.main([*command, "--data-dir", str(data_dir)]) == 0
    made = accounts.by_phone(sandbox.server.services.db, phone)
    assert made is not None and abs(made["created_at"] - TEST_START) < timedelta(minutes=5)

    args = cli.build_parser().parse_args(["dev", "--clock-start", "2026-11-25T10:00"])
    assert args.clock_start == TEST_START  # a moment without an offset is Shanghai time


def test_the_sandbox_keeps_data_sessions_and_time_across_a_restart(data_dir: Path) -> None:
    first = Running(data_dir)
    openid = "o-restart"
    try:
        login_by_invoke(first.url, OWNER, openid)
        token = login_by_api(first.url, OTHER_OWNER)
        assert advance(first.url, 120)[0] == 200
    finally:
        first.stop()

    second = Running(data_dir)
    try:
        assert second.server.seeded is False
        db = second.server.services.db
        assert db[COMMUNITIES].count_documents({}) == len(DEMO_COMMUNITIES)

        status, me = invoke(second.url, "login", {"action": "me"}, openid)
        assert (status, me["data"]["phone"]) == (200, OWNER)
        status, me = api(second.url, "login", {"action": "me"}, token)
        assert (status, me["data"]["phone"]) == (200, OTHER_OWNER)
        assert advance(second.url, 0)[1]["data"]["offset_s"] == 120.0
        # Moved past the one-minute resend wait before the restart: a new code is due at once.
        assert login_by_invoke(second.url, OWNER, openid)["first_login"] is False
    finally:
        second.stop()


def test_staff_added_from_the_command_line_while_serving_can_log_in_to_the_staff_app(
    sandbox: Running, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = "13912345678"
    status, body = invoke(sandbox.url, "login", {"action": "send_code", "phone": phone})
    assert (status, body["error"]["code"]) == (403, "ACCOUNT_NOT_FOUND")

    exit_code = cli.main(
        [
            "admin",
            "add-staff",
            "--phone",
            phone,
            "--name",
            "钱工",
            "--role",
            "repairman",
            "--community",
            DEMO_COMMUNITIES[0].name,
            "--data-dir",
            str(data_dir),
        ]
    )
    assert exit_code == 0
    assert "staff added" in capsys.readouterr().out

    data = login_by_invoke(sandbox.url, phone, "o-staff-app", app="staff")
    garden = community_id(sandbox.server, DEMO_COMMUNITIES[0].name)
    assert data["account"]["staff"] == {
        "role": "repairman",
        "role_name": "维修员",
        "community_ids": [garden],
        "communities": [{"community_id": garden, "name": DEMO_COMMUNITIES[0].name}],
        "all_communities": False,
    }


def test_add_staff_before_the_first_start_makes_a_company_wide_admin_and_keeps_the_demo(
    data_dir: Path,
) -> None:
    phone = "13912340000"
    command = ["admin", "add-staff", "--phone", phone, "--name", "总部管理员", "--role", "admin"]
    assert cli.main([*command, "--data-dir", str(data_dir)]) == 0

    running = Running(data_dir)
    try:
        assert running.server.seeded is True
        data = login_by_invoke(running.url, phone, "o-hq-admin", app="staff")
        assert data["account"]["staff"]["role"] == "admin"
        assert data["account"]["staff"]["all_communities"] is True
    finally:
        running.stop()


def test_add_staff_refuses_an_unknown_community_without_a_traceback(
    sandbox: Running, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = cli.main(
        [
            "admin",
            "add-staff",
            "--phone",
            "13912345679",
            "--name",
            "王五",
            "--role",
            "guard",
            "--community",
            "不存在的小区",
            "--data-dir",
            str(data_dir),
        ]
    )
    err = capsys.readouterr().err
    assert exit_code != 0
    assert "不存在的小区" in err and "Traceback" not in err
    assert accounts.by_phone(sandbox.server.services.db, "13912345679") is None


def test_a_non_staff_account_is_refused_by_the_staff_app(sandbox: Running) -> None:
    openid = "o-owner-in-staff-app"
    code = send_code(sandbox.url, OWNER, openid)
    status, body = invoke(
        sandbox.url,
        "login",
        {"action": "login", "phone": OWNER, "code": code, "app": "staff"},
        openid,
        **appid_header("staff"),
    )
    assert (status, body["error"]["code"]) == (403, "FORBIDDEN")


def test_invoke_command_prints_the_envelope_and_fails_on_an_error_envelope(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Running(data_dir).stop()
    event = json.dumps({"action": "check_account", "phone": OWNER})
    assert cli.main(["invoke", "login", "--event", event, "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index('{\n  "ok"') :]) == {"ok": True, "data": {"exists": True}}

    me = json.dumps({"action": "me"})
    assert cli.main(["invoke", "login", "--event", me, "--data-dir", str(data_dir)]) == 1
    assert '"UNAUTHENTICATED"' in capsys.readouterr().out

    assert cli.main(["invoke", "nope", "--event", "{}", "--data-dir", str(data_dir)]) != 0
    assert "nope" in capsys.readouterr().err


def test_invoke_command_calls_as_the_mini_program_app_names(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Running(data_dir).stop()
    guard = "13800000005"  # 陈静, owner and guard

    def invoke_as(app: str, event: dict[str, Any]) -> tuple[int, Any]:
        args = ["invoke", "login", "--event", json.dumps(event), "--openid", "o-cli"]
        code = cli.main([*args, "--app", app, "--data-dir", str(data_dir)])
        out = capsys.readouterr().out
        return code, json.loads(out[out.index('{\n  "ok"') :])

    invoke_as("staff", {"action": "send_code", "phone": guard})
    with open_sandbox(data_dir) as sandbox:
        code = sandbox_outbox(sandbox.services.db, guard)[0]["code"]
    assert invoke_as("staff", {"action": "login", "phone": guard, "code": code})[0] == 0

    status, me = invoke_as("staff", {"action": "me"})
    assert (status, me["data"]["staff"]["role"]) == (0, "guard")
    status, me = invoke_as("resident", {"action": "me"})  # the staff app's openid, not this one's
    assert (status, me["error"]["code"]) == (1, "UNAUTHENTICATED")


def test_unknown_routes_and_functions_answer_not_found_envelopes(sandbox: Running) -> None:
    for method, path in [
        ("GET", "/"),
        ("POST", "/invoke/no_such_function"),
        ("POST", "/api/no_such_function"),
        ("POST", "/timer/no_such_function"),
        ("POST", "/invoke/../login"),
        ("GET", "/dev/nothing"),
    ]:
        reply = requests.request(method, sandbox.url + path, timeout=TIMEOUT_S)
        assert reply.status_code == 404, path
        assert reply.json()["error"]["code"] == "NOT_FOUND", path


def test_wrong_methods_bad_json_and_oversized_bodies_are_refused(sandbox: Running) -> None:
    reply = requests.get(f"{sandbox.url}/invoke/login", timeout=TIMEOUT_S)
    assert (reply.status_code, reply.headers["Allow"]) == (405, "POST")
    assert reply.json()["ok"] is False

    for raw in ["{not json", "[1, 2]", "\xff"]:
        reply = requests.post(f"{sandbox.url}/invoke/login", data=raw, timeout=TIMEOUT_S)
        assert (reply.status_code, reply.json()["error"]["code"]) == (400, "INVALID_ARGUMENT")

    reply = requests.post(
        f"{sandbox.url}/invoke/login", data=b" " * (MAX_BODY_BYTES + 1), timeout=TIMEOUT_S
    )
    assert reply.status_code == 413
    assert reply.json()["ok"] is False

    reply = requests.get(f"{sandbox.url}/dev/sms", params={"phone": "12345"}, timeout=TIMEOUT_S)
    assert (reply.status_code, reply.json()["error"]["code"]) == (400, "INVALID_ARGUMENT")


def test_the_access_log_masks_the_phone_of_a_dev_sms_query(
    sandbox: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    latest = requests.get(f"{sandbox.url}/dev/sms", params={"phone": OWNER}, timeout=TIMEOUT_S)
    assert latest.status_code == 200
    err = capsys.readouterr().err
    assert "/dev/sms" in err
    assert OWNER not in err


def test_events_reach_functions_in_the_shapes_the_platform_sends(
    sandbox: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = tmp_path / "functions" / "echo_probe"
    probe.mkdir(parents=True)
    (probe / "index.py").write_text(
        "import json\n"
        "def main_handler(event, context):\n"
        "    if 'httpMethod' in event:\n"
        "        body = json.dumps({'event': event})\n"
        "        return {'statusCode': 202, 'headers': {'X-Probe': 'yes'}, 'body': body}\n"
        "    return {'ok': True, 'data': {'event': event}}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("CAIYUN_FUNCTIONS_DIR", str(probe.parent))
    base = sandbox.url

    _, body = invoke(base, "echo_probe", {"action": "x", "userInfo": {"openId": "o-body"}}, "o-h")
    assert body["data"]["event"] == {
        "action": "x",
        "userInfo": {"openId": "o-h", "appId": SANDBOX_APPID},
    }
    _, body = invoke(base, "echo_probe", {"action": "x"}, "o-h", **{"X-WX-AppID": "wx-staff"})
    assert body["data"]["event"]["userInfo"]["appId"] == "wx-staff"

    raw = '{"action": "me"}'
    reply = requests.post(
        f"{base}/api/echo_probe?page=2",
        data=raw,
        headers={"Authorization": "Bearer t0ken", "Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )
    assert (reply.status_code, reply.headers["X-Probe"]) == (202, "yes")
    event = reply.json()["event"]
    assert event["httpMethod"] == "POST" and event["path"] == "/api/echo_probe"
    assert event["headers"]["authorization"] == "Bearer t0ken"
    assert (event["body"], event["isBase64Encoded"]) == (raw, False)
    assert event["requestContext"]["sourceIp"] == "127.0.0.1"
    assert event["requestContext"]["requestId"]
    assert event["queryString"] == event["queryStringParameters"] == {"page": "2"}
    assert event["pathParameters"] == event["headerParameters"] == {}

    reply = requests.post(f"{base}/timer/echo_probe", timeout=TIMEOUT_S)
    timer = reply.json()["data"]["event"]
    assert (timer["Type"], timer["TriggerName"], timer["Message"]) == (
        "Timer",
        "echo_probe-timer",
        "",
    )
    assert datetime.fromisoformat(timer["Time"].replace("Z", "+00:00")).tzinfo is not None

    # No icbc_callback in this functions folder: the notify route says so.
    reply = requests.post(f"{base}/icbc/notify", data="a=1&b=2", timeout=TIMEOUT_S)
    assert (reply.status_code, reply.json()["error"]["code"]) == (404, "NOT_FOUND")


def test_the_seeded_database_holds_exactly_the_documented_demo_data(sandbox: Running) -> None:
    services = sandbox.server.services
    db = services.db
    assert sandbox.server.seeded is True
    ids = {}
    for community in DEMO_COMMUNITIES:
        doc = db[COMMUNITIES].find_one(
            {"province": community.province, "city": community.city, "name": community.name}
        )
        assert doc is not None and doc["district"] == community.district
        ids[community.name] = doc["_id"]
        assert db[HOUSES].count_documents({"community_id": doc["_id"]}) == len(community.houses)
        for house in community.houses:
            found = house_store.by_address(
                db, doc["_id"], building=house.building, unit=house.unit, room=house.room
            )
            assert found is not None and found["owner_phone"] == house.owner_phone
            assert accounts.by_phone(db, house.owner_phone) is not None
    for member in DEMO_STAFF:
        account = accounts.by_phone(db, member.phone)
        record = staff.get(db, account["_id"])
        assert record["role"] == member.role
        assert record["all_communities"] is (member.communities is None)
        expected = sorted(ids[n] for n in member.communities or ())
        assert record["community_ids"] == expected

    before = {name: db[name].count_documents({}) for name in ("communities", "houses", "accounts")}
    assert seed_demo(services) is False
    after = {name: db[name].count_documents({}) for name in ("communities", "houses", "accounts")}
    assert after == before


def test_create_server_refuses_a_production_profile(data_dir: Path) -> None:
    with pytest.raises(SandboxRefused):
        create_server("127.0.0.1", 0, data_dir, True, settings=production_settings())
    assert not data_dir.exists()


def test_fifty_clients_at_once_are_all_answered_without_a_connection_reset(
    sandbox: Running,
) -> None:
    clients = 50
    start = threading.Barrier(clients)
    answers: list[int] = []
    failures: list[str] = []

    def call() -> None:
        start.wait()
        try:
            status, _ = invoke(sandbox.url, "notify", {"action": "notices"}, "o-burst")
            answers.append(status)
        except requests.RequestException as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=call) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert failures == []
    assert answers == [401] * clients  # an unbound openid: every call reached the function
