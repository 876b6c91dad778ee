"""Complaints and suggestions (投诉建议): filed by a resident, answered by the property.

A complaint moves ``submitted`` → ``processing`` → ``resolved`` and never back; a resolved one
takes no more replies. Every reply is kept with who gave it and when, and the resident is told
through the inbox (and WeChat where they consented).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from caiyun import labels
from caiyun.clock import SHANGHAI, iso
from caiyun.crypto import mask_phone
from caiyun.domain import (
    appconfig,
    communities,
    create_limits,
    houses,
    idempotency,
    memberships,
    messaging,
    staff,
)
from caiyun.domain.lifecycles import COMPLAINT
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.services import Services
from caiyun.stores import communities as community_store
from caiyun.stores import complaints as store
from caiyun.stores import memberships as membership_store
from caiyun.stores.accounts import Account
from caiyun.stores.complaints import Complaint, Reply
from caiyun.stores.staff import StaffRecord

KIND_NAMES = labels.LABELS["complaint_kind"]
STATUS_NAMES = labels.LABELS["complaint_status"]
PAGE = "/pages/complaint/detail?id={}"


def types(services: Services) -> list[dict[str, str]]:
    """The complaint types in force, in the order the app offers them."""
    options = appconfig.current(services).complaint_types
    return [{"code": code, "name": name} for code, name in options.items()]


def _filed_notes(doc: Complaint, admin_ids: list[str]) -> list[messaging.Note]:
    """The community's admins' inbox messages about a new complaint or suggestion, with the
    staff app's ``complaint_filed`` subscription message; keyed by the complaint, so a retried
    create tells nobody twice.

    Template keys: thing1 kind and type, thing2 where, time3 when, thing4 the resident's words.
    """
    what = f"{KIND_NAMES[doc['kind']]}·{doc['type_name']}"
    where = f"{doc['community_name']}{doc['house_label']}"
    return [
        messaging.Note(
            account_id=admin_id,
            kind="complaint_filed",
            title=f"新的{KIND_NAMES[doc['kind']]}",
            body=f"{where}：{what}，{doc['content']}",
            page=PAGE.format(doc["_id"]),
            push=messaging.Push(
                template="complaint_filed",
                data={
                    "thing1": what,
                    "thing2": where,
                    "time3": f"{doc['created_at'].astimezone(SHANGHAI):%Y-%m-%d %H:%M}",
                    "thing4": doc["content"],
                },
            ),
            app="staff",
            community_id=doc["community_id"],
            key=f"complaint-filed-{doc['_id']}",
        )
        for admin_id in admin_ids
    ]


def create(
    services: Services,
    account: Account,
    fields: dict[str, Any],
    once: idempotency.Key | None = None,
) -> dict[str, Any]:
    """File a complaint or suggestion about one of the caller's houses; returns its detail.

    ``fields`` holds house_id, kind, type (a complaint type in force), contact_phone, content
    and images (file ids of this deployment's storage). The same request (``once``) from the same
    caller returns the first complaint instead of filing again. The community's admins are
    told (inbox, and WeChat where they consented).
    """
    db = services.db
    membership, house, community = memberships.require_member_house(
        db, account["_id"], fields["house_id"], also=staff.admins_joined()
    )
    admin_ids, spendable = staff.admins_of(membership)
    type_name = appconfig.option_name(services, "complaint_types", fields["type"], "type")
    images = services.storage.check_file_ids(fields["images"], uploader=account["_id"])
    filed: list[Complaint] = []

    def file(record_id: str) -> dict[str, Any]:
        now = services.clock.now()
        doc: Complaint = {
            "_id": record_id,
            **houses.where(house, community),
            "account_id": account["_id"],
            "kind": fields["kind"],
            "type": fields["type"],
            "type_name": type_name,
            "contact_phone": fields["contact_phone"],
            "content": fields["content"],
            "images": images,
            "status": "submitted",
            "replies": [],
            "created_at": now,
            "updated_at": now,
            "resolved_at": None,
        }
        filed.append(store.insert(db, doc))
        messaging.deliver_many(services, _filed_notes(filed[-1], admin_ids), spendable)
        return {"complaint_id": filed[-1]["_id"]}

    def stored(record_id: str) -> dict[str, Any] | None:
        # The first call's complaint, if it got as far as storing it.
        return {"complaint_id": record_id} if store.exists(db, record_id) else None

    def limit() -> None:
        create_limits.take_daily(services, "complaints", account["_id"], fields["house_id"])

    created = idempotency.once(services, once, file, stored, limit)
    if filed:
        return _detail(services, filed[-1], account["_id"])
    # A repeated request answered from the first one's result: its complaint is read back.
    return detail(services, account, created["complaint_id"])


Page = tuple[list[dict[str, Any]], int, dict[str, int]]


def _page(
    services: Services,
    query: dict[str, Any],
    status: str | None,
    page: int,
    page_size: int,
    show: Callable[[Complaint, dict[str, str]], dict[str, Any]],
) -> Page:
    """(items, total, counts): the page of ``status`` (any), newest first, each complaint as
    ``show`` makes it from the document and community names, and how many complaints
    ``query`` holds in each status (every status present)."""
    db = services.db
    docs, total, counts = store.page(db, query, status, page, page_size)
    names = _community_names(db, docs)
    items = [show(doc, names) for doc in docs]
    return items, total, counts


def _community_names(db: Any, docs: list[Complaint]) -> dict[str, str]:
    # Complaints filed since names are kept carry their community's; older ones are looked up,
    # all in one read, only if the page holds any.
    missing = sorted({d["community_id"] for d in docs if "community_name" not in d})
    return community_store.names(db, missing) if missing else {}


def my_list(
    services: Services, account: Account, status: str | None, page: int, page_size: int
) -> Page:
    """A page of the caller's complaints, and of every complaint of the houses the caller owns
    (``mine`` false: filed by family or tenants, the contact phone masked), newest first, with
    counts by status."""
    me = account["_id"]

    def show(doc: Complaint, names: dict[str, str]) -> dict[str, Any]:
        return {**item(doc, doc["account_id"] == me, names), "mine": doc["account_id"] == me}

    query = memberships.filed_or_owned(services.db, account, "account_id")
    return _page(services, query, status, page, page_size, show)


def staff_list(
    services: Services,
    admin: StaffRecord,
    community_id: str | None,
    narrow: dict[str, str | None],
    page: int,
    page_size: int,
) -> Page:
    """A page of complaints of one community, or of every community the admin covers, with
    counts by status. ``narrow`` may hold ``status`` (the page's tab), ``kind`` and ``type``
    (which narrow the counts too).

    Contact phones are masked in the list; the detail shows them to the admin in full.
    """
    query: dict[str, Any] = {}
    if community_id is not None:
        staff.require_scope(admin, community_id)
        query["community_id"] = community_id
    else:
        query.update(staff.scope_query(admin))
    for field in ("kind", "type"):
        if narrow.get(field):
            query[field] = narrow[field]
    return _page(
        services,
        query,
        narrow.get("status"),
        page,
        page_size,
        lambda doc, names: item(doc, False, names),
    )


def detail(services: Services, account: Account, complaint_id: str) -> dict[str, Any]:
    """One complaint with its images and replies, for its reporter, an admin covering it, or
    the owner of its house (read-only, the contact phone masked).

    Anyone else is told it does not exist, so ids cannot be probed for existence.
    """
    db, me = services.db, account["_id"]
    doc = store.get(db, complaint_id)
    if doc is None:
        raise AppError("NOT_FOUND", "投诉建议不存在")
    if doc["account_id"] == me or staff.is_admin_of(
        staff.of_account(db, account), doc["community_id"]
    ):
        return _detail(services, doc, me)
    if membership_store.owns(db, me, doc["house_id"]):
        return _detail(services, doc, me, reveal_phone=False)
    raise AppError("NOT_FOUND", "投诉建议不存在")


def _detail(
    services: Services, doc: Complaint, viewer_id: str, reveal_phone: bool = True
) -> dict[str, Any]:
    names = {doc["community_id"]: communities.name_on(services.db, doc)}
    urls = services.storage.display_urls(doc["images"])
    return {
        **item(doc, reveal_phone, names),
        "mine": doc["account_id"] == viewer_id,
        "images": [{"file_id": fid, "url": urls.get(fid)} for fid in doc["images"]],
        "replies": [
            {
                "staff_name": r["staff_name"],
                "text": r["text"],
                "status": r["status"],
                "status_name": STATUS_NAMES[r["status"]],
                "replied_at": iso(r["at"]),
            }
            for r in doc["replies"]
        ],
        "resolved_at": iso(doc.get("resolved_at")),
    }


def item(doc: Complaint, reveal_phone: bool, names: dict[str, str]) -> dict[str, Any]:
    """A complaint as a list shows it; ``names`` are community names for complaints that do
    not carry theirs."""
    return {
        "complaint_id": doc["_id"],
        "community_id": doc["community_id"],
        "community_name": doc.get("community_name") or names.get(doc["community_id"], ""),
        "house_id": doc["house_id"],
        "house_label": doc["house_label"],
        "kind": doc["kind"],
        "kind_name": KIND_NAMES[doc["kind"]],
        "type": doc["type"],
        "type_name": doc.get("type_name") or labels.name("complaint_type", doc["type"]),
        "content": doc["content"],
        "contact_phone": doc["contact_phone"] if reveal_phone else mask_phone(doc["contact_phone"]),
        "status": doc["status"],
        "status_name": STATUS_NAMES[doc["status"]],
        "reply_count": len(doc["replies"]),
        "created_at": iso(doc["created_at"]),
        "updated_at": iso(doc["updated_at"]),
    }


def reply(
    services: Services, admin: StaffRecord, *, complaint_id: str, text: str, status: str
) -> dict[str, Any]:
    """Answer a complaint and move it to ``status``; returns the detail.

    The update is conditional on the complaint still being open, so a reply racing the one
    that resolves it loses with CONFLICT instead of reopening it.
    """
    db = services.db
    now = services.clock.now()
    entry: Reply = {
        "reply_id": new_id(),
        "staff_id": admin["_id"],
        "staff_name": admin.get("name") or "物业管理员",
        "text": text,
        "status": status,
        "at": now,
    }
    # The admin's scope is part of the condition, so the write is the only command when the
    # reply is allowed; why it was not is read only when it was not.
    doc = store.answer(
        db,
        complaint_id,
        expects={**staff.scope_query(admin), **COMPLAINT.expects(f"reply_{status}")},
        to=COMPLAINT.target(f"reply_{status}"),
        reply=entry,
    )
    if doc is None:
        raise _refusal(db, admin, complaint_id)
    _tell_reporter(services, doc, text, now)
    return _detail(services, doc, admin["_id"])


def _refusal(db: Any, admin: StaffRecord, complaint_id: str) -> AppError:
    latest = store.where_and_state(db, complaint_id)
    if latest is None:
        return AppError("NOT_FOUND", "投诉建议不存在")
    community_id, status = latest
    staff.require_scope(admin, community_id)
    if status == "resolved":
        return AppError("CONFLICT", "该投诉建议已解决，不能再回复")
    return AppError("CONFLICT", "回复次数已达上限，请处理完毕后结案")


def _tell_reporter(services: Services, doc: Complaint, text: str, now: datetime) -> None:
    kind = KIND_NAMES[doc["kind"]]
    status = STATUS_NAMES[doc["status"]]
    messaging.deliver(
        services,
        [doc["account_id"]],
        "complaint",
        title=f"您的{kind}{status}",
        body=text,
        page=PAGE.format(doc["_id"]),
        # Keys of the 投诉处理结果通知 template: content, progress, reply, time.
        push=messaging.Push(
            template="complaint",
            data={
                "thing1": doc["content"],
                "phrase2": status,
                "thing3": text,
                "time4": f"{now.astimezone(SHANGHAI):%Y-%m-%d %H:%M}",
            },
        ),
        community_id=doc["community_id"],
    )
