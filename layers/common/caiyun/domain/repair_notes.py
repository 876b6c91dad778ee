"""Who is told what as a repair moves: the inbox messages, each with its WeChat subscription
message, for the reporter, the community's admins and the repairmen."""

from __future__ import annotations

from datetime import datetime

from caiyun import labels
from caiyun.clock import SHANGHAI
from caiyun.domain import messaging
from caiyun.domain import repair_views as views
from caiyun.stores.repairs import Repair

# Where a message opens; the page has the same path in the resident and the staff app.
REPAIR_PAGE = "/pages/repair/detail?id={}"


def _time(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def to_reporter(doc: Repair, title: str, remark: str) -> messaging.Note:
    """The reporter's inbox message, with the ``repair`` subscription message.

    Template keys: thing1 category, phrase2 status, time3 when, thing4 remark.
    """
    category = views.category_name(doc)
    return messaging.Note(
        account_id=doc["reporter_id"],
        kind="repair",
        title=title,
        body=f"{category}（{doc['house_label']}）：{remark}",
        page=REPAIR_PAGE.format(doc["_id"]),
        push=messaging.Push(
            template="repair",
            data={
                "thing1": category,
                "phrase2": views.STATUS_NAMES[doc["status"]],
                "time3": _time(doc["updated_at"]),
                "thing4": remark,
            },
        ),
        community_id=doc["community_id"],
    )


def _to_staff(
    doc: Repair,
    account_id: str,
    kind: labels.MessageKind,
    title: str,
    template: str,
    when: datetime,
    key: str | None = None,
) -> messaging.Note:
    """A staff member's inbox message about the work a repair asks for, with the staff app's
    subscription message ``template``.

    Template keys: thing1 category, thing2 where, time3 when, thing4 the resident's words.
    """
    category = views.category_name(doc)
    where = f"{doc['community_name']}{doc['house_label']}"
    return messaging.Note(
        account_id=account_id,
        kind=kind,
        title=title,
        body=f"{where}：{category}，{doc['description']}",
        page=REPAIR_PAGE.format(doc["_id"]),
        push=messaging.Push(
            template=template,
            data={
                "thing1": category,
                "thing2": where,
                "time3": _time(when),
                "thing4": doc["description"],
            },
        ),
        app="staff",
        community_id=doc["community_id"],
        key=key,
    )


def to_repairman(doc: Repair) -> messaging.Note:
    """The assigned repairman's message (``repair_assigned``)."""
    assert doc["repairman_id"] is not None, "a dispatched repair names its repairman"
    return _to_staff(
        doc, doc["repairman_id"], "repair", "新的维修工单", "repair_assigned", doc["updated_at"]
    )


def to_previous_repairman(doc: Repair, previous_id: str) -> messaging.Note:
    """The inbox message of the repairman the work was taken from (nothing to push)."""
    return messaging.Note(
        account_id=previous_id,
        kind="repair",
        title="工单已改派",
        body=f"{doc['community_name']}{doc['house_label']}的维修工单已改派他人",
        page=REPAIR_PAGE.format(doc["_id"]),
        app="staff",
        community_id=doc["community_id"],
    )


def to_admins(doc: Repair, admin_ids: list[str]) -> list[messaging.Note]:
    """The community's admins' messages about a new repair (``repair_filed``); keyed by the
    repair, so a retried create tells nobody twice."""
    return [
        _to_staff(
            doc,
            admin_id,
            "repair_filed",
            "新的报修",
            "repair_filed",
            doc["created_at"],
            key=f"repair-filed-{doc['_id']}",
        )
        for admin_id in admin_ids
    ]
