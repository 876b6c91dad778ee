"""What each mini-program is configured with (``login.config``, ``login.staff_config``) and how
the property company changes it without an app release (``admin.update_config``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import fresh_services, invoke, make_settings
from round_trips import counted
from worlds import BAY, GARDEN, MAPLE, ok, owner_row, refused, resident_account, staff_account

from caiyun import labels
from caiyun.domain import appconfig, repairs
from caiyun.domain.owner_import import import_owners
from caiyun.errors import AppError
from caiyun.services import Services, build_services

TEMPLATES = {"repair": "tpl-repair", "bill": "tpl-bill", "repair_filed": "tpl-filed"}
HQ, ADMIN, OWNER = "o-staff-hq", "o-staff-garden", "o-res-owner"


@pytest.fixture
def services() -> Iterator[Services]:
    yield from fresh_services(make_settings(wechat_templates=TEMPLATES, config_cache_s=60))


@pytest.fixture
def world(services: Services) -> dict[str, Any]:
    garden = import_owners(services, GARDEN, [owner_row(101, "张伟", "13800000001")])
    import_owners(services, BAY, [owner_row(201, "李娜", "13800000002")])
    import_owners(services, MAPLE, [owner_row(301, "王芳", "13800000003")])
    house = {"_id": garden.rows[0].house_id, "community_id": garden.community_id}
    resident_account(services, "13800000001", "张伟", OWNER, [house])
    staff_account(services, "13900000001", "总部", "admin", None, HQ)
    staff_account(services, "13900000002", "物业", "admin", [garden.community_id], ADMIN)
    return {"house_id": house["_id"], "garden": garden.community_id}


def config(app: str = "resident") -> dict[str, Any]:
    action = "config" if app == "resident" else "staff_config"
    return ok(invoke("login", {"action": action}, openid=None))


def update(openid: str = HQ, app: str = "staff", **changes: Any) -> dict[str, Any]:
    """``admin.update_config`` called from ``app`` (the staff app's, as admins do)."""
    return invoke("admin", {"action": "update_config", **changes}, openid, app)


def agreement_edits(**texts: str) -> list[dict[str, Any]]:
    """Every agreement as it is now, with the texts given by code replaced."""
    return [
        {
            "code": a.code,
            "title": a.title,
            "text": texts.get(a.code, a.text),
            "required_when": list(a.required_when),
        }
        for a in appconfig.DEFAULT_AGREEMENTS
    ]


# ------------------------------------------------------------------------------ reading


def test_the_resident_app_reads_its_configuration_without_signing_in(
    world: dict[str, Any],
) -> None:
    data = config()

    assert data["revision"] == 0
    assert [(a["code"], a["version"], a["required_when"]) for a in data["agreements"]] == [
        ("wallet_service", "2026.1", ["card", "wallet"]),
        ("autodebit", "2026.1", ["autodebit"]),
        ("privacy", "2026.1", ["card", "wallet"]),
    ]
    assert all(a["title"] and a["text"] for a in data["agreements"])
    # Only this app's templates, and only those configured.
    assert data["templates"] == {"repair": "tpl-repair", "bill": "tpl-bill"}
    assert data["repair_categories"] == labels.options("repair_category")
    assert data["complaint_types"] == labels.options("complaint_type")
    assert data["regions"] == [
        {
            "province": "广东省",
            "cities": [
                {"city": "广州市", "districts": ["天河区"]},
                {"city": "深圳市", "districts": ["南山区", "福田区"]},
            ],
        }
    ]
    assert set(data["labels"]) == set(labels.LABELS)
    assert {"code": "paying", "name": "支付中"} in data["labels"]["bill_status"]


def test_the_staff_app_reads_its_templates_and_lists_without_signing_in(
    world: dict[str, Any],
) -> None:
    data = config("staff")

    assert data["templates"] == {"repair_filed": "tpl-filed"}
    assert data["repair_categories"] == labels.options("repair_category")
    assert "agreements" not in data and "regions" not in data


def test_the_configuration_is_read_once_per_container_while_it_is_recent(
    services: Services, world: dict[str, Any]
) -> None:
    services.memo.clear()  # a cold container

    def commands() -> list[str]:
        with counted(services, warm=False) as sent:
            config()
        return sent

    first, again = commands(), commands()
    services.clock.advance(61)
    later = commands()

    assert first == ["app_config.find_one", "communities.aggregate"]
    assert again == ["communities.aggregate"]
    assert later == first


# ------------------------------------------------------------------------------ changing


def test_a_company_wide_admin_changes_the_lists_for_both_apps_at_once(
    services: Services, world: dict[str, Any]
) -> None:
    categories = [{"code": "gas", "name": "燃气维修"}, {"code": "other", "name": "其他"}]

    saved = ok(update(repair_categories=categories))

    assert saved["revision"] == 1
    assert saved["repair_categories"] == categories
    assert saved["complaint_types"] == labels.options("complaint_type")  # left as it was
    assert config()["repair_categories"] == config("staff")["repair_categories"] == categories
    assert config()["labels"]["repair_category"] == categories
    assert ok(invoke("repair", {"action": "categories"}, OWNER))["items"] == categories


def test_only_a_company_wide_admin_may_change_the_configuration(
    services: Services, world: dict[str, Any]
) -> None:
    assert refused(update(ADMIN, complaint_types=[{"code": "noise", "name": "噪音"}])) == (
        "FORBIDDEN"
    )
    assert refused(
        update(OWNER, "resident", complaint_types=[{"code": "noise", "name": "噪音"}])
    ) == ("FORBIDDEN")
    assert services.db[appconfig.APP_CONFIG].count_documents({}) == 0
    assert config()["revision"] == 0


def test_a_save_over_someone_elses_change_is_a_conflict(
    services: Services, world: dict[str, Any]
) -> None:
    ok(update(complaint_types=[{"code": "noise", "name": "噪音扰民"}], revision=0))

    stale = update(complaint_types=[{"code": "parking", "name": "停车"}], revision=0)

    assert refused(stale) == "CONFLICT"
    assert config()["complaint_types"] == [{"code": "noise", "name": "噪音扰民"}]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"repair_categories": []}, "repair_categories"),
        (
            {"repair_categories": [{"code": "gas", "name": "燃气"}, {"code": "gas", "name": "气"}]},
            "repair_categories",
        ),
        ({"complaint_types": [{"code": "Noise!", "name": "噪音"}]}, "complaint_types.0.code"),
        ({"agreements": agreement_edits()[:2]}, "agreements"),
        ({"agreements": [agreement_edits()[0]] * 3}, "agreements"),
    ],
)
def test_a_configuration_that_makes_no_sense_is_refused_by_field(
    services: Services, world: dict[str, Any], changes: dict[str, Any], field: str
) -> None:
    reply = update(**changes)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert field in reply["error"]["details"]["fields"]
    assert services.db[appconfig.APP_CONFIG].count_documents({}) == 0


def test_a_new_agreement_text_is_a_new_version_and_every_version_is_kept(
    services: Services, world: dict[str, Any]
) -> None:
    saved = ok(update(agreements=agreement_edits(privacy="新的隐私政策全文")))

    versions = {a["code"]: a["version"] for a in saved["agreements"]}
    assert versions == {"wallet_service": "2026.1", "autodebit": "2026.1", "privacy": "2026.2"}
    ok(update(agreements=agreement_edits(privacy="再次修订的隐私政策")))
    assert {a["code"]: a["version"] for a in config()["agreements"]}["privacy"] == "2026.3"
    kept = {d["_id"]: d["text"] for d in services.db[appconfig.AGREEMENT_TEXTS].find()}
    assert kept["privacy@2026.1"] == appconfig.DEFAULTS.agreement("privacy").text
    assert kept["privacy@2026.2"] == "新的隐私政策全文"
    assert kept["privacy@2026.3"] == "再次修订的隐私政策"
    assert "wallet_service@2026.1" in kept and "autodebit@2026.1" in kept


# ------------------------------------------------------------------------------ in force


def report(services: Services, world: dict[str, Any], category: str) -> dict[str, Any]:
    event = {
        "action": "create",
        "house_id": world["house_id"],
        "category": category,
        "description": "燃气灶打不着火",
        "contact_phone": "13800000001",
    }
    return invoke("repair", event, OWNER)


def test_a_category_added_is_accepted_at_once_and_one_taken_out_refused_once_known(
    services: Services, world: dict[str, Any]
) -> None:
    # Another container on the same database, holding the defaults it read a moment ago.
    other = build_services(services.settings, clock=services.clock, db=services.db)
    appconfig.current(other)
    ok(update(repair_categories=[{"code": "gas", "name": "燃气维修"}]))
    account = services.db["accounts"].find_one({"phone": "13800000001"})

    # A code it does not know is looked up before it is refused: accepted there at once.
    filed = repairs.create(
        other,
        account,
        house_id=world["house_id"],
        category="gas",
        description="燃气灶",
        contact_phone="13800000001",
        images=[],
    )
    assert filed["category_name"] == "燃气维修"
    # A code taken out is refused once the container's copy is renewed.
    services.clock.advance(61)
    with pytest.raises(AppError) as refusal:
        repairs.create(
            other,
            account,
            house_id=world["house_id"],
            category="door_window",
            description="门",
            contact_phone="13800000001",
            images=[],
        )
    assert refusal.value.details == {"fields": {"category": "不在可选范围内"}}
    assert refused(report(services, world, "door_window")) == "INVALID_ARGUMENT"


def test_a_repair_keeps_the_label_it_was_filed_under(
    services: Services, world: dict[str, Any]
) -> None:
    filed = ok(report(services, world, "door_window"))
    ok(update(repair_categories=[{"code": "door_window", "name": "门窗"}]))

    detail = ok(invoke("repair", {"action": "detail", "repair_id": filed["repair_id"]}, OWNER))
    new = ok(report(services, world, "door_window"))

    assert detail["category_name"] == "门窗维修"
    assert new["category_name"] == "门窗"
