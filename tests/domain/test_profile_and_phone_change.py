"""The 我的 page: profile, nickname and avatar, and moving an account to a new phone."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import http, invoke
from worlds import ok, refused

from caiyun.adapters.sms import sandbox_outbox
from caiyun.domain import accounts, sessions, sms_codes
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import staff

PHONE = "13800001111"
NEW_PHONE = "13900002222"
OPENID = "o-me"


@pytest.fixture
def me(services: Services) -> dict[str, Any]:
    account, _ = account_store.ensure_account(services.db, PHONE, services.clock.now(), "张三")
    accounts.bind_openid(services.db, account["_id"], "resident", OPENID)
    return account


def call(action: str, openid: str | None = OPENID, **fields: Any) -> dict[str, Any]:
    return invoke("account", {"action": action, **fields}, openid)


# ------------------------------------------------------------------------------ profile


def test_profile_of_a_new_account(me: dict[str, Any]) -> None:
    assert ok(call("profile")) == {
        "account_id": me["_id"],
        "phone": PHONE,
        "name": "张三",
        "nickname": None,
        "avatar": None,
        "avatar_url": None,
        "realname_verified": False,
        "wallet": None,
    }


def test_profile_shows_the_wallet_to_its_owner_with_the_id_number_masked(
    services: Services, me: dict[str, Any]
) -> None:
    services.db[account_store.ACCOUNTS].update_one(
        {"_id": me["_id"]},
        {
            "$set": {
                "realname_verified": True,
                "realname": {"name": "张伟", "id_masked": "4403**********1234"},
                "wallet": {
                    "kind": "wallet",
                    "wallet_no": "6212000012345678901",
                    "wallet_class": "II",
                    "card_no": None,
                    "linked_card_masked": "6228********5678",
                },
                "autodebit": {"enabled": True},
            }
        },
    )

    data = ok(call("profile"))

    assert data["realname_verified"] is True
    assert data["wallet"] == {
        "account_kind": "wallet",
        "account_kind_name": "工银e钱包",
        "wallet_no": "6212000012345678901",  # the owner's own wallet: in full
        "wallet_class": "II",
        "wallet_class_name": "Ⅱ类电子账户",
        "linked_card": "6228********5678",
        "autodebit": True,
        "realname": "张伟",
        "id_number_masked": "4403**********1234",
    }


def test_profile_needs_an_account(me: dict[str, Any]) -> None:
    assert refused(call("profile", openid="o-stranger")) == "UNAUTHENTICATED"


def test_update_nickname_and_avatar(services: Services, me: dict[str, Any]) -> None:
    avatar = f"sandbox://files/avatar/{me['_id']}/me.png"

    data = ok(call("update_profile", nickname="  小张  ", avatar=avatar))

    assert (data["nickname"], data["avatar"]) == ("小张", avatar)
    assert ok(call("profile"))["nickname"] == "小张"
    assert ok(call("update_profile", nickname="张三丰"))["avatar"] == avatar


def test_wechat_avatar_url_is_accepted(me: dict[str, Any]) -> None:
    url = "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTKx1aZ3/132"

    assert ok(call("update_profile", avatar=url))["avatar"] == url


@pytest.mark.parametrize(
    "avatar",
    [
        "http://thirdwx.qlogo.cn/mmopen/a/132",
        "https://evil.example/a.png",
        "https://qlogo.cn.evil.example/a.png",
        "https://evil.example\\@thirdwx.qlogo.cn/a.png",
        "https://user@thirdwx.qlogo.cn/a.png",
        "javascript:alert(1)",
        "cloud://another-env.bucket/a.png",
        "sandbox://files/../secrets.png",
    ],
)
def test_avatar_from_elsewhere_is_refused(
    services: Services, me: dict[str, Any], avatar: str
) -> None:
    reply = call("update_profile", avatar=avatar)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "avatar" in reply["error"]["details"]["fields"]
    assert account_store.by_id(services.db, me["_id"])["avatar"] is None


@pytest.mark.parametrize(
    "fields",
    [{}, {"nickname": ""}, {"nickname": "长" * 33}, {"nickname": "a\x00b"}, {"nickname": 7}],
)
def test_bad_profile_update_is_refused(me: dict[str, Any], fields: dict[str, Any]) -> None:
    assert refused(call("update_profile", **fields)) == "INVALID_ARGUMENT"


# ------------------------------------------------------------------------------ change phone


def send(services: Services, phone: str, purpose: str, openid: str = OPENID) -> str:
    reply = invoke("login", {"action": "send_code", "phone": phone, "purpose": purpose}, openid)
    ok(reply)
    return sandbox_outbox(services.db, phone)[0]["code"]


def codes(services: Services) -> tuple[str, str]:
    return send(services, PHONE, "change_phone_old"), send(services, NEW_PHONE, "change_phone_new")


def change(old_code: str, new_code: str, new_phone: str = NEW_PHONE) -> dict[str, Any]:
    return call("change_phone", old_code=old_code, new_phone=new_phone, new_code=new_code)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_phone_moves_when_both_numbers_prove_themselves(
    services: Services, me: dict[str, Any]
) -> None:
    old_code, new_code = codes(services)

    data = ok(change(old_code, new_code))

    assert data["phone"] == NEW_PHONE and data["account_id"] == me["_id"]
    assert account_store.by_phone(services.db, NEW_PHONE)["_id"] == me["_id"]
    assert account_store.by_phone(services.db, PHONE) is None
    assert ok(call("profile"))["phone"] == NEW_PHONE
    # The new number now signs in to the same account.
    login_code = send(services, NEW_PHONE, "login", openid="o-other-phone")
    signed_in = invoke("login", {"action": "login", "phone": NEW_PHONE, "code": login_code}, None)
    assert ok(signed_in)["account"]["account_id"] == me["_id"]


def test_a_phone_change_keeps_both_apps_signed_in(services: Services, me: dict[str, Any]) -> None:
    # One person in both mini-programs: the change is made in the resident app, and neither
    # app's openid nor session is touched by it.
    staff.upsert(services.db, me["_id"], "张三", "guard", ["c-1"], services.clock.now())
    accounts.bind_openid(services.db, me["_id"], "staff", "o-me-staff")
    tokens = {
        app: sessions.open_session(services, me["_id"], app)[0].token
        for app in ("resident", "staff")
    }
    old_code, new_code = codes(services)

    ok(change(old_code, new_code))

    assert ok(invoke("login", {"action": "me"}, OPENID))["phone"] == NEW_PHONE
    on_staff = ok(invoke("login", {"action": "me"}, "o-me-staff", "staff"))
    assert (on_staff["phone"], on_staff["staff"]["role"]) == (NEW_PHONE, "guard")
    for app, token in tokens.items():
        assert http("login", {"action": "me"}, token=token)[0] == 200, app
    assert account_store.by_id(services.db, me["_id"])["wx"] == {
        "resident": OPENID,
        "staff": "o-me-staff",
    }


@pytest.mark.parametrize("bad", ["old", "new"])
def test_wrong_code_changes_nothing(services: Services, me: dict[str, Any], bad: str) -> None:
    old_code, new_code = codes(services)
    if bad == "old":
        old_code = wrong(old_code)
    else:
        new_code = wrong(new_code)

    assert refused(change(old_code, new_code)) == "CODE_INVALID"
    assert account_store.by_id(services.db, me["_id"])["phone"] == PHONE


def test_codes_of_another_purpose_do_not_count(services: Services, me: dict[str, Any]) -> None:
    login_code = send(services, PHONE, "login")
    new_code = send(services, NEW_PHONE, "change_phone_new")

    assert refused(change(login_code, new_code)) == "CODE_INVALID"
    assert account_store.by_id(services.db, me["_id"])["phone"] == PHONE


def test_codes_work_once(services: Services, me: dict[str, Any]) -> None:
    old_code, new_code = codes(services)
    ok(change(old_code, new_code))

    third = "13700003333"
    assert refused(change(old_code, new_code, new_phone=third)) == "CODE_INVALID"


def test_number_taken_meanwhile_is_a_conflict_and_spends_no_code(
    services: Services, me: dict[str, Any]
) -> None:
    old_code, new_code = codes(services)
    account_store.ensure_account(services.db, NEW_PHONE, services.clock.now())

    assert refused(change(old_code, new_code)) == "CONFLICT"
    assert account_store.by_id(services.db, me["_id"])["phone"] == PHONE
    live = services.db[sms_codes.SMS_CODES].count_documents({"used": False})
    assert live == 2


def test_a_change_racing_an_import_of_the_new_number_leaves_one_account_with_it(
    services: Services, me: dict[str, Any]
) -> None:
    old_code, new_code = codes(services)
    start = threading.Barrier(2)
    replies: list[dict[str, Any]] = []

    def change_it() -> None:
        start.wait()
        replies.append(change(old_code, new_code))

    def import_it() -> None:
        start.wait()
        account_store.ensure_account(services.db, NEW_PHONE, services.clock.now(), "新业主")

    threads = [threading.Thread(target=change_it), threading.Thread(target=import_it)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    holders = list(services.db[account_store.ACCOUNTS].find({"phone": NEW_PHONE}))
    assert len(holders) == 1
    if replies[0]["ok"]:
        assert holders[0]["_id"] == me["_id"]
    else:
        assert refused(replies[0]) == "CONFLICT"
        assert account_store.by_id(services.db, me["_id"])["phone"] == PHONE


def test_same_number_is_refused(services: Services, me: dict[str, Any]) -> None:
    reply = change("123456", "123456", new_phone=PHONE)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "new_phone" in reply["error"]["details"]["fields"]


@pytest.mark.parametrize(
    "fields",
    [
        {"old_code": "12345", "new_phone": NEW_PHONE, "new_code": "123456"},
        {"old_code": "123456", "new_phone": "23900002222", "new_code": "123456"},
        {"old_code": "123456", "new_phone": NEW_PHONE},
        {"old_code": 123456, "new_phone": NEW_PHONE, "new_code": "123456"},
    ],
)
def test_malformed_change_is_refused(me: dict[str, Any], fields: dict[str, Any]) -> None:
    assert refused(call("change_phone", **fields)) == "INVALID_ARGUMENT"


def test_change_phone_needs_an_account(me: dict[str, Any]) -> None:
    fields = {"old_code": "123456", "new_phone": NEW_PHONE, "new_code": "123456"}

    assert refused(call("change_phone", openid=None, **fields)) == "UNAUTHENTICATED"
