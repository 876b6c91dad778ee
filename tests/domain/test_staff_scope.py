"""Staff management: admins, repairmen and guards, each limited to their communities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import worlds
from conftest import http, invoke
from worlds import ok, owner_row, refused

from caiyun.adapters.sms import sandbox_outbox
from caiyun.domain import staff
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import accounts
from caiyun.stores import staff as staff_store

GARDEN = {**worlds.GARDEN, "address": "科技南路 1 号"}
BAY = {**worlds.BAY, "address": "天河路 8 号"}


class Person(worlds.Person):
    """Someone signed in, who may try to manage staff."""

    def add_staff(self, phone: str, role: str, community_ids: list[str], name: str = "员工") -> Any:
        return self.call(
            "admin", "add_staff", phone=phone, name=name, role=role, community_ids=community_ids
        )

    def staff_ids(self, **fields: Any) -> set[str]:
        page = ok(self.call("admin", "list_staff", page_size=100, **fields))
        assert page["total"] == len(page["items"])
        return {s["account_id"] for s in page["items"]}


def sign_in(services: Services, phone: str, app: str = "resident") -> Person:
    return worlds.sign_in(services, phone, app, Person)


@dataclass(frozen=True)
class Company:
    hq: Person  # company-wide admin
    garden_admin: Person  # admin of 彩云花园 only
    garden_id: str
    bay_id: str


@pytest.fixture
def company(services: Services) -> Company:
    hq = worlds.make_staff(services, "13700000000", "admin", None, name="总部", person=Person)
    garden = ok(
        hq.call(
            "admin",
            "import_owners",
            community=GARDEN,
            rows=[owner_row("101", "张三", "13800000001")],
        )
    )
    bay = ok(
        hq.call(
            "admin", "import_owners", community=BAY, rows=[owner_row("101", "赵六", "13800000004")]
        )
    )
    ok(hq.add_staff("13700000001", "admin", [garden["community_id"]], name="花园管理员"))
    return Company(
        hq=hq,
        garden_admin=sign_in(services, "13700000001", app="staff"),
        garden_id=garden["community_id"],
        bay_id=bay["community_id"],
    )


def staff_login(services: Services, phone: str) -> str:
    """The error code of a staff-app login for ``phone``, or "OK"."""
    openid = f"o-probe-{phone}"
    ok(invoke("login", {"action": "send_code", "phone": phone}, openid, "staff"))
    code = sandbox_outbox(services.db, phone)[0]["code"]
    event = {"action": "login", "phone": phone, "code": code, "app": "staff"}
    reply = invoke("login", event, openid, "staff")
    return "OK" if reply["ok"] else reply["error"]["code"]


# ------------------------------------------------------------------------------- add_staff


def test_company_wide_admin_appoints_a_community_admin(
    services: Services, company: Company
) -> None:
    admin = ok(company.hq.add_staff("13700000002", "admin", [company.bay_id], name="湾区管理员"))

    assert admin == {
        "account_id": admin["account_id"],
        "name": "湾区管理员",
        "phone": "137****0002",
        "role": "admin",
        "role_name": "物业管理员",
        "community_ids": [company.bay_id],
        "all_communities": False,
    }
    assert sign_in(services, "13700000002", app="staff").account_id == admin["account_id"]


def test_community_admin_adds_a_repairman_who_can_use_the_staff_app(
    services: Services, company: Company
) -> None:
    added = ok(company.garden_admin.add_staff("13600000001", "repairman", [company.garden_id]))

    assert (added["role"], added["community_ids"]) == ("repairman", [company.garden_id])
    assert staff_login(services, "13600000001") == "OK"
    assert added["account_id"] in company.garden_admin.staff_ids()


def test_community_admin_cannot_add_staff_to_another_community(
    services: Services, company: Company
) -> None:
    elsewhere = company.garden_admin.add_staff("13600000002", "guard", [company.bay_id])
    partly = company.garden_admin.add_staff(
        "13600000002", "guard", [company.garden_id, company.bay_id]
    )

    assert refused(elsewhere) == "FORBIDDEN"
    assert refused(partly) == "FORBIDDEN"
    assert accounts.by_phone(services.db, "13600000002") is None


def test_community_admin_cannot_appoint_an_admin(services: Services, company: Company) -> None:
    reply = company.garden_admin.add_staff("13600000003", "admin", [company.garden_id])

    assert refused(reply) == "FORBIDDEN"
    assert accounts.by_phone(services.db, "13600000003") is None
    assert len(company.garden_admin.staff_ids(role="admin")) == 1  # only itself


def test_community_admin_cannot_take_over_staff_of_another_community(
    services: Services, company: Company
) -> None:
    guard = ok(company.hq.add_staff("13600000004", "guard", [company.bay_id]))

    reply = company.garden_admin.add_staff("13600000004", "repairman", [company.garden_id])

    assert refused(reply) == "CONFLICT"
    bay_guards = ok(company.hq.call("admin", "list_staff", role="guard"))["items"]
    assert [(g["account_id"], g["community_ids"]) for g in bay_guards] == [
        (guard["account_id"], [company.bay_id])
    ]


def test_community_admin_cannot_demote_another_admin(services: Services, company: Company) -> None:
    ok(company.hq.add_staff("13700000003", "admin", [company.garden_id], name="另一位管理员"))

    reply = company.garden_admin.add_staff("13700000003", "repairman", [company.garden_id])

    assert refused(reply) in {"FORBIDDEN", "CONFLICT"}


def test_adding_staff_to_an_unknown_community_is_not_found(company: Company) -> None:
    reply = company.hq.add_staff("13600000005", "guard", ["no-such-community"])

    assert refused(reply) == "NOT_FOUND"


def test_staff_roles_are_admin_repairman_or_guard(services: Services, company: Company) -> None:
    reply = company.hq.add_staff("13600000006", "cleaner", [company.garden_id])

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "role" in reply["error"]["details"]["fields"]


# ------------------------------------------------------------------------------ list_staff


def test_list_staff_shows_only_staff_of_the_admins_communities(company: Company) -> None:
    garden_repairman = ok(company.hq.add_staff("13600000001", "repairman", [company.garden_id]))
    bay_guard = ok(company.hq.add_staff("13600000002", "guard", [company.bay_id]))
    both = ok(company.hq.add_staff("13600000003", "repairman", [company.garden_id, company.bay_id]))

    seen_by_garden = company.garden_admin.staff_ids()
    seen_by_hq = company.hq.staff_ids()

    assert seen_by_garden == {
        company.garden_admin.account_id,
        garden_repairman["account_id"],
        both["account_id"],
    }
    assert seen_by_hq == seen_by_garden | {company.hq.account_id, bay_guard["account_id"]}
    assert company.garden_admin.staff_ids(role="repairman") == {
        garden_repairman["account_id"],
        both["account_id"],
    }
    assert company.garden_admin.staff_ids(role="guard") == set()


def test_list_staff_masks_phones_and_pages(company: Company) -> None:
    for i in range(3):
        ok(company.hq.add_staff(f"1360000001{i}", "guard", [company.garden_id]))

    first = ok(company.garden_admin.call("admin", "list_staff", role="guard", page_size=2))
    second = ok(company.garden_admin.call("admin", "list_staff", role="guard", page=2, page_size=2))

    assert (first["total"], len(first["items"]), len(second["items"])) == (3, 2, 1)
    phones = sorted(s["phone"] for s in first["items"] + second["items"])
    assert phones == ["136****0010", "136****0011", "136****0012"]


# ---------------------------------------------------------------------------- remove_staff


def test_community_admin_removes_its_own_repairman(services: Services, company: Company) -> None:
    repairman = ok(company.garden_admin.add_staff("13600000001", "repairman", [company.garden_id]))

    reply = company.garden_admin.call("admin", "remove_staff", account_id=repairman["account_id"])

    assert ok(reply) == {"removed": True}
    assert repairman["account_id"] not in company.hq.staff_ids()
    assert staff_login(services, "13600000001") == "FORBIDDEN"


def test_community_admin_cannot_remove_staff_outside_its_scope(company: Company) -> None:
    bay_guard = ok(company.hq.add_staff("13600000002", "guard", [company.bay_id]))
    both = ok(company.hq.add_staff("13600000003", "repairman", [company.garden_id, company.bay_id]))
    fellow_admin = ok(company.hq.add_staff("13700000003", "admin", [company.garden_id]))

    for target in (bay_guard["account_id"], both["account_id"], fellow_admin["account_id"]):
        reply = company.garden_admin.call("admin", "remove_staff", account_id=target)
        assert refused(reply) == "FORBIDDEN"
    hq_reply = company.garden_admin.call("admin", "remove_staff", account_id=company.hq.account_id)
    assert refused(hq_reply) == "FORBIDDEN"
    assert {
        bay_guard["account_id"],
        both["account_id"],
        fellow_admin["account_id"],
        company.hq.account_id,
    } <= company.hq.staff_ids()


def test_nobody_removes_themselves(company: Company) -> None:
    for admin in (company.hq, company.garden_admin):
        reply = admin.call("admin", "remove_staff", account_id=admin.account_id)
        assert refused(reply) == "CONFLICT"
        assert admin.account_id in company.hq.staff_ids()


def test_removing_someone_who_is_not_staff_is_not_found(company: Company) -> None:
    reply = company.hq.call("admin", "remove_staff", account_id="no-such-account")

    assert refused(reply) == "NOT_FOUND"


def test_a_removed_admin_loses_admin_actions_at_once(company: Company) -> None:
    reply = company.hq.call("admin", "remove_staff", account_id=company.garden_admin.account_id)

    assert ok(reply) == {"removed": True}
    assert refused(company.garden_admin.call("admin", "list_staff")) == "FORBIDDEN"
    assert refused(company.garden_admin.add_staff("13600000001", "guard", [company.garden_id])) == (
        "FORBIDDEN"
    )


# ---------------------------------------------------------------------- who calls admin at all


def admin_actions(company: Company) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "import_owners",
            {"community": GARDEN, "rows": [owner_row("102", "李四", "13800000002")]},
        ),
        (
            "add_staff",
            {
                "phone": "13600000009",
                "name": "员工",
                "role": "guard",
                "community_ids": [company.garden_id],
            },
        ),
        ("list_staff", {}),
        ("remove_staff", {"account_id": company.garden_admin.account_id}),
    ]


@pytest.mark.parametrize("role", ["repairman", "guard"])
def test_repairmen_and_guards_are_forbidden_every_admin_action(
    services: Services, company: Company, role: str
) -> None:
    ok(company.hq.add_staff("13600000001", role, [company.garden_id]))
    worker = sign_in(services, "13600000001", app="staff")

    for action, fields in admin_actions(company):
        assert refused(worker.call("admin", action, **fields)) == "FORBIDDEN", action
    assert accounts.by_phone(services.db, "13600000009") is None
    assert company.garden_admin.account_id in company.hq.staff_ids()


def test_residents_are_forbidden_every_admin_action(services: Services, company: Company) -> None:
    resident = sign_in(services, "13800000001")

    for action, fields in admin_actions(company):
        assert refused(resident.call("admin", action, **fields)) == "FORBIDDEN", action


def test_anonymous_callers_must_sign_in_for_every_admin_action(company: Company) -> None:
    for action, fields in admin_actions(company):
        for openid in (None, "o-never-signed-in"):
            reply = invoke("admin", {"action": action, **fields}, openid)
            assert refused(reply) == "UNAUTHENTICATED", action


def test_over_http_scope_refusals_are_403_and_missing_tokens_401(company: Company) -> None:
    event = {
        "action": "add_staff",
        "phone": "13600000001",
        "name": "员工",
        "role": "guard",
        "community_ids": [company.bay_id],
    }

    status, body = http("admin", event, token=company.garden_admin.token)
    anonymous_status, anonymous_body = http("admin", {"action": "list_staff"})

    assert (status, body["error"]["code"]) == (403, "FORBIDDEN")
    assert (anonymous_status, anonymous_body["error"]["code"]) == (401, "UNAUTHENTICATED")
    status, body = http("admin", {"action": "list_staff"}, token=company.garden_admin.token)
    assert status == 200 and body["data"]["total"] == 1


def test_a_staff_change_lands_only_on_a_record_the_filter_still_allows(
    services: Services,
) -> None:
    # The scope check is the write's own filter: a record another admin changed out of reach
    # in the meantime is not overwritten, nor is a second record made beside it.
    db, now = services.db, services.clock.now()
    person, _ = accounts.ensure_account(db, "13700000077", now, "周师傅")
    within_c1 = {"community_ids": {"$not": {"$elemMatch": {"$nin": ["c1"]}}}}
    assert staff_store.change_where(
        db, person["_id"], within_c1, "周师傅", "repairman", {"c1": "一区"}, now
    )
    staff_store.upsert(db, person["_id"], "周师傅", "guard", ["c2"], now)

    assert (
        staff_store.change_where(
            db, person["_id"], within_c1, "周师傅", "repairman", {"c1": "一区"}, now
        )
        is None
    )
    assert db[staff_store.STAFF].count_documents({}) == 1
    assert staff_store.get(db, person["_id"])["role"] == "guard"
    assert staff_store.get(db, person["_id"])["community_ids"] == ["c2"]


def test_a_staff_removal_made_on_a_stale_reading_is_refused(services: Services) -> None:
    db, now = services.db, services.clock.now()
    person, _ = accounts.ensure_account(db, "13700000077", now, "周师傅")
    first = staff_store.upsert(db, person["_id"], "周师傅", "repairman", ["c1"], now)
    staff_store.upsert(db, person["_id"], "周师傅", "guard", ["c1"], now)

    with pytest.raises(AppError) as gone:
        staff.remove_checked(db, first)

    assert gone.value.code == "CONFLICT"
    assert staff_store.get(db, person["_id"])["role"] == "guard"
