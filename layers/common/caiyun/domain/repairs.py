"""Repairs (报修): the state machine, who may move it, and the job that closes unrated ones.

``pending`` → ``dispatched`` → ``awaiting_rating`` → ``completed``, and ``pending`` →
``cancelled``. Each transition is one conditional update on the state it expects, and appends
its timeline entry (who, when, what) in that same update: two callers racing (a resident rating
while the timer closes the repair, two timers at once) can never both win, and a transition not
allowed now answers CONFLICT and changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from caiyun.adapters.storage import UploadTarget
from caiyun.crypto import mask_phone
from caiyun.domain import (
    appconfig,
    create_limits,
    houses,
    idempotency,
    memberships,
    messaging,
    staff,
    uploads,
)
from caiyun.domain import repair_notes as tell
from caiyun.domain import repair_views as views
from caiyun.domain.lifecycles import REPAIR
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import communities as community_store
from caiyun.stores import memberships as membership_store
from caiyun.stores import repairs as store
from caiyun.stores.accounts import STAFF_JOINED, Account
from caiyun.stores.repairs import Repair
from caiyun.stores.staff import StaffRecord


def categories(services: Services) -> list[dict[str, str]]:
    """The repair categories a resident picks from (the configuration in force)."""
    options = appconfig.current(services).repair_categories
    return [{"code": code, "name": name} for code, name in options.items()]


def _shown(services: Services, doc: Repair, viewer_id: str) -> dict[str, Any]:
    """The repair's detail as ``viewer_id`` sees it, its images with display URLs."""
    urls = services.storage.display_urls(views.file_ids(doc))
    return views.detail(doc, viewer_id, urls)


def _get(db: Any, repair_id: str) -> Repair:
    doc = store.get(db, repair_id)
    if doc is None:
        raise AppError("NOT_FOUND", "报修单不存在")
    return doc


def _require_reporter(db: Any, account: Account, repair_id: str) -> None:
    # Someone else's repair answers as if it did not exist: ids reveal nothing. The owner of
    # its house sees it, read-only: moving it is the reporter's.
    parties = store.parties(db, repair_id)
    if parties is not None and parties[0] == account["_id"]:
        return
    if parties is not None and membership_store.owns(db, account["_id"], parties[1]):
        raise AppError("FORBIDDEN", "只有报修人可以操作此报修单")
    raise AppError("NOT_FOUND", "报修单不存在")


def _conflict(doc: Repair | None) -> AppError:
    status = None if doc is None else views.STATUS_NAMES[doc["status"]]
    message = f"报修单当前为{status}，不能进行此操作" if status else None
    return AppError("CONFLICT", message)


def create(
    services: Services,
    account: Account,
    *,
    house_id: str,
    category: str,
    description: str,
    contact_phone: str,
    images: list[str],
    once: idempotency.Key | None = None,
) -> dict[str, Any]:
    """Report a repair for a house the caller lives in; returns its detail.

    HOUSE_NOT_BOUND when the caller has no house at all, FORBIDDEN for a house that is not
    theirs, INVALID_ARGUMENT for a category not in force or an image not in this deployment's
    storage. The same request again (``once``: the key its action declares) returns the first
    result and creates nothing (the result is rebuilt from the repair, so the key needs no
    second write). The community's
    admins are told (inbox, and WeChat where they consented); the membership check reads who
    they are in the same command.
    """
    db = services.db
    membership, house, community = memberships.require_member_house(
        db, account["_id"], house_id, also=staff.admins_joined()
    )
    admin_ids, spendable = staff.admins_of(membership)
    category_name = appconfig.option_name(services, "repair_categories", category, "category")
    images = services.storage.check_file_ids(images, "images", uploader=account["_id"])

    def make(record_id: str) -> dict[str, Any]:
        now = services.clock.now()
        doc: Repair = {
            "_id": record_id,
            **houses.where(house, community),
            "reporter_id": account["_id"],
            "category": category,
            "category_name": category_name,
            "description": description,
            "contact_phone": contact_phone,
            "images": images,
            "status": "pending",
            "repairman_id": None,
            "created_at": now,
            "updated_at": now,
            "timeline": [
                store.entry_of(
                    "created", "pending", actor_id=account["_id"], actor_role="resident", at=now
                )
            ],
        }
        stored = store.insert(db, doc)
        messaging.deliver_many(services, tell.to_admins(stored, admin_ids), spendable)
        return _shown(services, stored, account["_id"])

    def stored(record_id: str) -> dict[str, Any] | None:
        # The reply as the first call gave it, whatever happened to the repair since.
        first = store.as_filed(db, record_id)
        return None if first is None else _shown(services, first, account["_id"])

    def limit() -> None:
        create_limits.take_daily(services, "repairs", account["_id"], house_id)

    return idempotency.once(services, once, make, stored, limit)


def cancel(services: Services, account: Account, repair_id: str) -> dict[str, Any]:
    """The reporter withdraws a repair nobody has been sent to yet (CONFLICT afterwards)."""
    db, now = services.db, services.clock.now()
    _require_reporter(db, account, repair_id)
    done = store.move(
        db,
        repair_id,
        expects={"reporter_id": account["_id"], **REPAIR.expects("cancel")},
        to=REPAIR.target("cancel"),
        step=store.Step(event="cancelled", actor_id=account["_id"], actor_role="resident", at=now),
        fields={"cancelled_at": now},
    )
    if done is None:
        raise _conflict(store.get(db, repair_id))
    return _shown(services, done, account["_id"])


def rate(
    services: Services, account: Account, repair_id: str, stars: int, comment: str
) -> dict[str, Any]:
    """The reporter rates the finished work: ``awaiting_rating`` → ``completed``.

    CONFLICT when the repair is not awaiting a rating, including when the timer closed it first.
    """
    db, now = services.db, services.clock.now()
    _require_reporter(db, account, repair_id)
    done = store.move(
        db,
        repair_id,
        expects={"reporter_id": account["_id"], **REPAIR.expects("rate")},
        to=REPAIR.target("rate"),
        step=store.Step(
            event="rated",
            actor_id=account["_id"],
            actor_role="resident",
            at=now,
            note=f"{stars}星",
        ),
        fields={
            "auto_closed": False,
            "closed_at": now,
            "rating": {"stars": stars, "comment": comment, "at": now},
        },
    )
    if done is None:
        raise _conflict(store.get(db, repair_id))
    return _shown(services, done, account["_id"])


def _require_repairman(
    person: Account | None, record: StaffRecord | None, community_id: str
) -> tuple[Account, StaffRecord]:
    """The repairman's account and staff record, if they may be sent to that community."""
    if person is None or record is None or record["role"] != "repairman":
        raise AppError("NOT_FOUND", "维修员不存在")
    if not staff.covers(record, community_id):
        raise AppError("FORBIDDEN", "该维修员不负责此小区")
    return person, record


def _dispatching(
    db: Any,
    repair_id: str,
    expects: dict[str, Any],
    *,
    admin: StaffRecord,
    person: Account,
    record: StaffRecord,
    move: str,
    now: datetime,
) -> Repair | None:
    """Send this repairman (``move``: dispatch or redispatch) if the repair still matches
    ``expects``; the repair after, or None."""
    return store.move(
        db,
        repair_id,
        expects=expects,
        to=REPAIR.target(move),
        step=store.Step(
            event=f"{move}ed",
            actor_id=admin["_id"],
            actor_role="admin",
            at=now,
            note=f"维修员：{record['name']}",
        ),
        fields={
            "repairman_id": person["_id"],
            "repairman_name": record["name"],
            "repairman_phone": person.get("phone"),
            "dispatched_at": now,
            "dispatched_by": admin["_id"],
        },
    )


def dispatch(
    services: Services, admin: StaffRecord, repair_id: str, repairman_id: str
) -> dict[str, Any]:
    """Send a repairman of the repair's community: ``pending`` → ``dispatched``.

    While dispatched it may be sent to someone else (the previous repairman is told); sending
    it again to the same repairman changes nothing. Every update expects exactly the state it
    was decided on, so two admins dispatching at once cannot both win: the loser gets CONFLICT
    (or, if the winner sent someone else, re-dispatches after it).
    """
    db, now = services.db, services.clock.now()
    person = account_store.with_staff(db, repairman_id)
    record = None if person is None else person.get(STAFF_JOINED)
    done, previous = None, None
    if person is not None and record is not None and record["role"] == "repairman":
        # The usual case, a first dispatch, is this one write: both scopes are in its filter.
        first: dict[str, Any] = {**REPAIR.expects("dispatch"), "repairman_id": None}
        scopes = [scope for scope in (staff.scope_query(admin), staff.scope_query(record)) if scope]
        if scopes:
            first["$and"] = scopes
        done = _dispatching(
            db,
            repair_id,
            first,
            admin=admin,
            person=person,
            record=record,
            move="dispatch",
            now=now,
        )
    if done is None:
        # Anything else is decided on the repair as read, in the order the rules are told.
        doc = _get(db, repair_id)
        staff.require_scope(admin, doc["community_id"])
        person, record = _require_repairman(person, record, doc["community_id"])
        if doc["status"] == "dispatched" and doc["repairman_id"] == repairman_id:
            return _shown(services, doc, admin["_id"])
        move = "dispatch" if doc["status"] == "pending" else "redispatch"
        if not REPAIR.allows(doc["status"], move, "admin"):
            raise _conflict(doc)
        as_read = {"status": doc["status"], "repairman_id": doc["repairman_id"]}
        done = _dispatching(
            db, repair_id, as_read, admin=admin, person=person, record=record, move=move, now=now
        )
        if done is None:
            raise AppError("CONFLICT", "报修单状态已变化，请刷新后重试")
        previous = doc["repairman_id"]
    notes = [
        tell.to_reporter(done, "报修已派单", f"已安排维修员{done['repairman_name']}上门"),
        tell.to_repairman(done),
    ]
    if previous:
        notes.append(tell.to_previous_repairman(done, previous))
    messaging.deliver_many(services, notes)
    return _shown(services, done, admin["_id"])


def complete(
    services: Services,
    repairman: StaffRecord,
    repair_id: str,
    photos: list[str],
    note: str,
) -> dict[str, Any]:
    """The assigned repairman reports the work done: ``dispatched`` → ``awaiting_rating``.

    FORBIDDEN for anyone else (or a repairman no longer covering the community); the rating
    window starts now.
    """
    db, now = services.db, services.clock.now()
    try:
        photos = services.storage.check_file_ids(photos, "photos", uploader=repairman["_id"])
    except AppError:
        # Whoever may not complete this repair is told that before anything about the photos.
        _require_assigned(db, repairman, repair_id)
        raise
    # Who may complete it is part of the update's filter: no read before it when all is well.
    done = store.move(
        db,
        repair_id,
        expects={
            **REPAIR.expects("finish"),
            "repairman_id": repairman["_id"],
            **staff.scope_query(repairman),
        },
        to=REPAIR.target("finish"),
        step=store.Step(
            event="work_done",
            actor_id=repairman["_id"],
            actor_role="repairman",
            at=now,
            note=note or None,
        ),
        fields={"awaiting_since": now, "completion": {"photos": photos, "note": note, "at": now}},
    )
    if done is None:
        raise _conflict(_require_assigned(db, repairman, repair_id))
    remark = f"请在{views.RATING_WINDOW.days}天内评价"
    messaging.deliver_many(services, [tell.to_reporter(done, "维修已完成，请评价", remark)])
    return _shown(services, done, repairman["_id"])


def _require_assigned(db: Any, repairman: StaffRecord, repair_id: str) -> Repair:
    """The repair if it is assigned to this repairman in a community they cover; else
    NOT_FOUND or FORBIDDEN."""
    doc = _get(db, repair_id)
    if doc.get("repairman_id") != repairman["_id"] or not staff.covers(
        repairman, doc["community_id"]
    ):
        raise AppError("FORBIDDEN", "该工单未派给您")
    return doc


def detail(services: Services, account: Account, repair_id: str) -> dict[str, Any]:
    """A repair for its reporter, an admin of its community, its assigned repairman, or the
    owner of its house (read-only, the reporter's contact phone masked).

    Anyone else is told it does not exist.
    """
    db = services.db
    doc = _get(db, repair_id)
    if doc["reporter_id"] == account["_id"]:
        return _shown(services, doc, account["_id"])
    record = staff.of_account(db, account)
    working_on_it = (
        record is not None
        and staff.covers(record, doc["community_id"])
        and (
            record["role"] == "admin"
            or (record["role"] == "repairman" and doc.get("repairman_id") == account["_id"])
        )
    )
    if working_on_it:
        return _shown(services, doc, account["_id"])
    if membership_store.owns(db, account["_id"], doc["house_id"]):
        shown = _shown(services, doc, account["_id"])
        return {**shown, "contact_phone": mask_phone(doc["contact_phone"])}
    raise AppError("NOT_FOUND", "报修单不存在")


Page = tuple[list[dict[str, Any]], int, dict[str, int]]


def my_list(
    services: Services, account: Account, status: str | None, page: int, page_size: int
) -> Page:
    """The caller's repairs, and every repair of the houses the caller owns (``mine`` false:
    filed by family or tenants, read-only), newest first; returns (items, total, counts by
    status)."""
    me = account["_id"]
    query = memberships.filed_or_owned(services.db, account, "reporter_id")
    docs, total, counts = store.page(services.db, query, status, page, page_size)
    return [{**views.summary(d), "mine": d["reporter_id"] == me} for d in docs], total, counts


def staff_list(
    services: Services,
    admin: StaffRecord,
    community_id: str | None,
    status: str | None,
    page: int,
    page_size: int,
) -> Page:
    """Repairs of one community the admin covers, or of all of them; newest first, with the
    counts by status of that scope."""
    query: dict[str, Any] = {}
    if community_id is not None:
        staff.require_scope(admin, community_id)
        query["community_id"] = community_id
    else:
        query.update(staff.scope_query(admin))
    docs, total, counts = store.page(services.db, query, status, page, page_size)
    return [views.staff_item(d) for d in docs], total, counts


def assigned(
    services: Services, repairman: StaffRecord, status: str | None, page: int, page_size: int
) -> Page:
    """The repairs assigned to this repairman now, newest first, with counts by status."""
    docs, total, counts = store.page(
        services.db, {"repairman_id": repairman["_id"]}, status, page, page_size
    )
    return [views.staff_item(d) for d in docs], total, counts


def repairmen(services: Services, admin: StaffRecord, community_id: str) -> list[dict[str, Any]]:
    """The repairmen who cover a community, with how many repairs each has open to visit.

    Two reads: the repairmen with their accounts joined in, then their open repairs counted.
    """
    db = services.db
    staff.require_scope(admin, community_id)
    records = account_store.repairmen_covering(db, community_id)
    # Scopes are checked to name existing communities when given, so the community is read
    # only when neither the admin's nor any repairman's scope names it.
    named = not admin.get("all_communities") or any(
        community_id in r.get("community_ids", []) for r in records
    )
    if not named and community_store.get(db, community_id) is None:
        raise AppError("NOT_FOUND", "小区不存在")
    open_repairs = store.count_by_repairman(db, [r["_id"] for r in records], "dispatched")
    items = [
        {
            "account_id": r["_id"],
            "name": r["name"],
            "phone": mask_phone(r["account"][0].get("phone") if r["account"] else None),
            "open_repairs": open_repairs.get(r["_id"], 0),
        }
        for r in records
    ]
    return sorted(items, key=lambda item: (item["open_repairs"], item["name"]))


def upload_target(
    services: Services, account: Account, purpose: str, filename: str
) -> UploadTarget:
    """Where the caller uploads one repair image (``report``) or completion photo."""
    return uploads.target(services, account, f"repair/{purpose}", filename)


def auto_close_due(
    services: Services, until: datetime | None = None, batch_size: int | None = None
) -> dict[str, int]:
    """Complete every repair left in ``awaiting_rating`` for the rating window; tell each reporter.

    Stops after the batch during which the clock passed ``until`` (``unfinished`` in the
    counts): what it closed no longer matches, so the next run carries on with the rest.

    Works in batches (``scheduler_batch_size`` by default) with one ``update_many`` each, paging
    by ``_id`` through every due repair. Each update still requires ``awaiting_rating`` and the
    deadline, so a resident rating at the same moment, or a second run overlapping this one,
    leaves exactly one completion; the run's own mark on what it closed decides who is told.
    """
    db, now = services.db, services.clock.now()
    size = batch_size or services.settings.scheduler_batch_size
    deadline = now - views.RATING_WINDOW
    run_id = new_id()
    closed, last_id = 0, ""
    note = f"超过{views.RATING_WINDOW.days}天未评价，已自动完成"
    unrated = {**REPAIR.expects("auto_close"), "awaiting_since": {"$lte": deadline}}
    while True:
        due = store.ids_after(db, last_id, matching=unrated, limit=size)
        if not due:
            break
        # One update for the whole batch: every repair gets the same change, and each document
        # is still updated atomically under the conditions, as a rating racing it needs.
        store.move_many(
            db,
            due,
            expects=unrated,
            to=REPAIR.target("auto_close"),
            step=store.Step(
                event="auto_closed", actor_id=None, actor_role="system", at=now, note=note
            ),
            fields={"auto_closed": True, "auto_close_run": run_id, "closed_at": now},
        )
        notes = [
            tell.to_reporter(doc, "报修已自动完成", note)
            for doc in store.among(db, due, matching={"auto_close_run": run_id})
        ]
        closed += len(notes)
        messaging.deliver_many(services, notes)
        last_id = due[-1]
        if len(due) < size:
            break
        if until is not None and services.clock.now() >= until:
            return {"repairs_auto_closed": closed, "unfinished": 1}
    return {"repairs_auto_closed": closed}
