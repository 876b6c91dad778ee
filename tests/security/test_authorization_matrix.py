"""The authorisation matrix: every action of every function against every kind of caller.

``EXPECTED`` is the matrix as data: one row per action (``function.action``, or
``function.action#variant`` for a second request shape), one cell per caller, each cell the
outcome the contract asks for: ``OK`` or the error code. ``REQUESTS`` holds, per row, a VALID
request aimed at the target house (彩云花园 1栋-1单元-101) and its records, so that every refusal is
about who calls, never about what was sent. A test enumerates the action table of every function
and fails when an action has no row, so a new action cannot ship without its place here.

Every cell runs against a fresh world (a new database per test, filled from a template built
once per module through the domain functions): two communities, the target house with its
owner, family and tenant, a neighbour's house, staff of both communities, a pending, a dispatched
and an awaiting-rating repair, a complaint, a visitor pass, bills, a payment order and a notice.
The bank is a running ``FakeIcbc`` (real RSA signatures on loopback); every account but
``no_house`` and the tenant has finished real-name verification with it, so the bank-backed
actions are really reached.

Beyond the outcome each cell checks:
- a refused call (``REFUSED`` codes) writes nothing (rate-limit counters aside);
- an outsider's reply, allowed or refused, holds none of the target house's identifiers (house
  id, record ids, people's names and phones, the texts they wrote), except where ``LEAK_EXEMPT``
  says why the contract shows one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from billing import RESIDENT_APPID
from conftest import fixed_clock, http, invoke, make_settings

from caiyun.adapters.icbc_protocol import generate_private_key_pem
from caiyun.adapters.sms import sandbox_outbox
from caiyun.adapters.storage import SandboxStorage
from caiyun.apidoc import documented_errors
from caiyun.catalog import ensure_indexes
from caiyun.clock import business_date
from caiyun.crypto import mask_phone
from caiyun.data.embedded import EmbeddedEngine
from caiyun.domain import (
    accounts,
    bill_import,
    complaints,
    import_jobs,
    notices,
    payments,
    realname,
    repairs,
    sessions,
    sms_codes,
    visitors,
)
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.functions import function_names, handler
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services, build_services, install_services
from caiyun.settings import Settings
from caiyun.stores import accounts as account_store
from caiyun.stores import memberships, staff

# ---------------------------------------------------------------------------------------------
# The callers.

CALLERS = (
    "anonymous",  # no identity at all
    "unbound",  # an openid bound to no account
    "no_house",  # an account with no house (mid-way through real-name verification)
    "tenant",  # tenant of the target house (not real-name verified)
    "family",  # family of the target house
    "other_owner",  # owner of the neighbouring house, same community
    "owner",  # owner of the target house, reporter of its repairs and complaint
    "repairman_other",  # repairman of the community, not assigned to the target repair
    "repairman",  # repairman of the community, assigned to the target repair
    "guard",  # guard of the community
    "admin_other",  # admin of the other community
    "admin",  # admin of the target community
    "admin_res",  # the same admin, calling from the resident app: a resident with no house
)

# Callers who have no business with the target house: nothing of it may reach them.
OUTSIDERS = (
    "anonymous",
    "unbound",
    "no_house",
    "other_owner",
    "repairman_other",
    "admin_other",
    "admin_res",
)
# ... and of those, the ones outside the target community altogether.
STRANGERS = ("anonymous", "unbound", "no_house", "admin_other")

# Codes that mean "not you": the call was refused because of who made it. NOT_FOUND is how
# repairs, complaints, notices, orders and real-name tickets hide other people's records;
# HOUSE_NOT_BOUND and OWNER_MISMATCH are the house-scoped refusals of callers with no claim.
REFUSED = frozenset(
    {"UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "HOUSE_NOT_BOUND", "OWNER_MISMATCH"}
)

OK = "OK"
U = "UNAUTHENTICATED"
F = "FORBIDDEN"
NF = "NOT_FOUND"
HNB = "HOUSE_NOT_BOUND"
OM = "OWNER_MISMATCH"
RR = "REALNAME_REQUIRED"
C = "CONFLICT"

# ---------------------------------------------------------------------------------------------
# The matrix. Columns follow CALLERS: anonymous, unbound, no_house, tenant, family, other_owner
# (oth), owner, repairman_other (rpo), repairman, guard, admin_other (ado), admin, and admin_res
# (ars: the target community's admin signed in to the resident app, where staff rights do not
# reach: a verified account with no house).

ANYONE = (OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK)
ACCOUNT = (U, U, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK)  # any account, its own data
ADMIN_HERE = (U, U, F, F, F, F, F, F, F, F, F, OK, F)  # admin of the target community only
ANY_ADMIN = (U, U, F, F, F, F, F, F, F, F, OK, OK, F)  # any admin, within their own scope
MEMBER = (U, U, HNB, OK, OK, F, OK, HNB, HNB, HNB, HNB, HNB, HNB)  # any member of the house
REPORTER = (U, U, NF, NF, NF, NF, OK, NF, NF, NF, NF, NF, NF)  # the owner's own record
VERIFIED = (U, U, RR, RR, OK, OK, OK, OK, OK, OK, OK, OK, OK)  # own wallet, verified accounts
MANAGER = (U, U, F, F, F, F, OK, F, F, F, F, OK, F)  # owner of the house, or its admin
ADMIN_JOB = (U, U, F, F, F, F, F, F, F, F, NF, OK, F)  # a record of the target community

# fmt: off
EXPECTED: dict[str, tuple[str, ...]] = {
    #                              anon unbd nohs tent fam  oth  own  rpo  rep  grd  ado  adm  ars
    "login.check_account":        ANYONE,
    "login.send_code":            ANYONE,
    "login.login":                ANYONE,
    "login.logout":               ACCOUNT,
    "login.me":                   ACCOUNT,
    "login.config":               ANYONE,
    "login.staff_config":         ANYONE,
    "account.profile":            ACCOUNT,
    "account.update_profile":     ACCOUNT,
    "account.change_phone":       ACCOUNT,
    "account.upload_url":         ACCOUNT,
    "account.realname_start":     (U,   U,   OK,  OK,  C,   C,   C,   C,   C,   C,   C,   C,   C),
    "account.realname_confirm":   (U,   U,   OK,  NF,  C,   C,   C,   C,   C,   C,   C,   C,   C),
    "account.realname_resend":    (U,   U,   OK,  NF,  C,   C,   C,   C,   C,   C,   C,   C,   C),
    "account.wallet":             VERIFIED,
    "account.wallet_transactions":VERIFIED,
    "account.autodebit_start":    VERIFIED,
    "account.set_autodebit":      VERIFIED,
    "admin.import_owners":        ADMIN_HERE,
    "admin.import_bills":         ADMIN_HERE,
    "admin.overview":             ADMIN_HERE,
    "admin.import_upload_url":    ANY_ADMIN,
    "admin.start_import":         ADMIN_HERE,
    # A job of another community is hidden from its admin as if it did not exist.
    "admin.run_import":           ADMIN_JOB,
    "admin.import_job":           ADMIN_JOB,
    "admin.import_failed_rows":   ADMIN_JOB,
    "admin.import_failed_file":   ADMIN_JOB,
    "admin.add_staff":            ADMIN_HERE,
    "admin.list_staff":           ANY_ADMIN,
    "admin.remove_staff":         ADMIN_HERE,
    # Company-wide admins only: every admin of this matrix is scoped to one community.
    "admin.update_config":        (U,   U,   F,   F,   F,   F,   F,   F,   F,   F,   F,   F,   F),
    "bills.list":                 (U,   U,   HNB, OK,  OK,  F,   OK,  HNB, HNB, HNB, HNB, HNB, HNB),
    "bills.pay":                  (U,   U,   RR,  RR,  OK,  F,   OK,  F,   F,   F,   F,   F,   F),
    "bills.order":                REPORTER,
    "bills.open_orders":          ACCOUNT,
    "bills.staff_summary":        ADMIN_HERE,
    "bills.staff_list":           ADMIN_HERE,
    "bills.payment_issues":       ADMIN_HERE,
    "bills.staff_houses":         ADMIN_HERE,
    "bind_house.communities":     ACCOUNT,
    "bind_house.house_tree":      ACCOUNT,
    "bind_house.bind":            (U,   U,   OM,  OM,  OM,  OM,  OK,  OM,  OM,  OM,  OM,  OM,  OM),
    "bind_house.my_houses":       ACCOUNT,
    "bind_house.members":         MANAGER,
    "bind_house.add_member":      MANAGER,
    "bind_house.remove_member":   MANAGER,
    "complaint.types":            ACCOUNT,
    "complaint.create":           MEMBER,
    "complaint.my_list":          ACCOUNT,
    "complaint.detail":           (U,   U,   NF,  NF,  NF,  NF,  OK,  NF,  NF,  NF,  NF,  OK,  NF),
    "complaint.detail#family":    (U,   U,   NF,  NF,  OK,  NF,  OK,  NF,  NF,  NF,  NF,  OK,  NF),
    "complaint.staff_list":       ANY_ADMIN,
    "complaint.staff_list#community":ADMIN_HERE,
    "complaint.reply":            ADMIN_HERE,
    "notify.notices":             ACCOUNT,
    "notify.notices#community":   (U,   U,   F,   OK,  OK,  OK,  OK,  OK,  OK,  OK,  F,   OK,  F),
    "notify.notice_detail":       (U,   U,   NF,  OK,  OK,  OK,  OK,  OK,  OK,  OK,  NF,  OK,  NF),
    "notify.publish_notice":      ADMIN_HERE,
    "notify.messages":            ACCOUNT,
    "notify.mark_read":           ACCOUNT,
    "notify.subscribe":           ACCOUNT,
    "notify.remind_unpaid":       ADMIN_HERE,
    "repair.categories":          ACCOUNT,
    "repair.upload_url":          ACCOUNT,
    "repair.create":              MEMBER,
    "repair.my_list":             ACCOUNT,
    "repair.detail":              (U,   U,   NF,  NF,  NF,  NF,  OK,  NF,  OK,  NF,  NF,  OK,  NF),
    "repair.detail#family":       (U,   U,   NF,  NF,  OK,  NF,  OK,  NF,  NF,  NF,  NF,  OK,  NF),
    "repair.cancel":              REPORTER,
    "repair.cancel#family":       (U,   U,   NF,  NF,  OK,  NF,  F,   NF,  NF,  NF,  NF,  NF,  NF),
    "repair.rate":                REPORTER,
    "repair.staff_list":          ANY_ADMIN,
    "repair.staff_list#community":ADMIN_HERE,
    "repair.repairmen":           ADMIN_HERE,
    "repair.dispatch":            ADMIN_HERE,
    "repair.assigned":            (U,   U,   F,   F,   F,   F,   F,   OK,  OK,  F,   F,   F,   F),
    "repair.complete":            (U,   U,   F,   F,   F,   F,   F,   F,   OK,  F,   F,   F,   F),
    "visitor.register":           MEMBER,
    "visitor.pass":               ANYONE,
    "visitor.verify":             (U,   U,   F,   F,   F,   F,   F,   F,   F,   OK,  F,   OK,  F),
    "visitor.history":            ACCOUNT,
    "visitor.detail":             REPORTER,
    "visitor.detail#family":      (U,   U,   NF,  NF,  OK,  NF,  OK,  NF,  NF,  NF,  NF,  NF,  NF),
}
# fmt: on

# Where the contract itself shows an outsider something of the target house:
# - house_tree is the public room picker (region → community → building → unit → room); each
#   room carries its house_id. Binding goes by address, not by id, so this exposure is not
#   needed; see docs/security.md (finding M2).
# - pass shows the visit to whoever holds the pass token (the visitor): their own name.
LEAK_EXEMPT: dict[str, frozenset[str]] = {
    "bind_house.house_tree": frozenset({"house_id"}),
    "visitor.pass": frozenset({"visitor_name"}),
}

# ---------------------------------------------------------------------------------------------
# The world.

GARDEN = {"province": "广东省", "city": "深圳市", "district": "南山区", "name": "彩云花园"}
BAY = {"province": "广东省", "city": "广州市", "district": "天河区", "name": "星河湾"}
NOTIFY_URL = "https://caiyun.example.com/icbc/notify"
TEMPLATES = {"repair": "tpl-repair-0001", "complaint": "tpl-complaint-0001"}
NEW_PHONE = "13699990001"  # free: change_phone's and add_member's target
VISITOR_NAME, VISITOR_PHONE = "访客林小溪", "13511112222"
REPAIR_TEXT = "卫生间漏水渗到楼下隐秘描述"
COMPLAINT_TEXT = "楼上深夜噪音投诉隐秘内容"
NOTICE_TITLE = "彩云花园停水通知甲"


def completion_photo(repairman_id: str) -> str:
    """A completion photo uploaded by that repairman (upload slots sit under the uploader)."""
    return f"sandbox://files/repair/completion/{repairman_id}/done.jpg"


def with_luhn(partial: str) -> str:
    """``partial`` and the Luhn check digit that makes it a valid card number."""
    total = 0
    for index, digit in enumerate(reversed(partial)):
        n = int(digit)
        if index % 2 == 0:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return partial + str((10 - total % 10) % 10)


def with_id_check(first17: str) -> str:
    """A GB 11643 resident ID number: 17 digits and their check character."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


@dataclass(frozen=True)
class Person:
    key: str
    name: str
    n: int

    @property
    def phone(self) -> str:
        return f"1390000{self.n:04d}"

    @property
    def bank_phone(self) -> str:
        return f"1370000{self.n:04d}"

    @property
    def id_number(self) -> str:
        return with_id_check(f"44030519900101{self.n % 1000:03d}")

    @property
    def card(self) -> str:
        return with_luhn(f"6222020000{self.n:08d}")

    @property
    def openid(self) -> str:
        return f"o-matrix-{self.key}"


PEOPLE = {
    p.key: p
    for p in (
        Person("no_house", "孙丽丽", 1001),
        Person("tenant", "王晓芳", 1002),
        Person("family", "李晓娜", 1003),
        Person("other_owner", "赵子强", 1004),
        Person("owner", "张晓伟", 1005),
        Person("repairman_other", "吴建军", 1006),
        Person("repairman", "周建国", 1007),
        Person("guard", "郑保国", 1008),
        Person("admin_other", "冯志明", 1009),
        Person("admin", "钱志远", 1010),
        Person("bay_owner", "陈静怡", 1011),
    )
}
STAFF_ROLES = {
    "repairman_other": ("repairman", "garden"),
    "repairman": ("repairman", "garden"),
    "guard": ("guard", "garden"),
    "admin_other": ("admin", "bay"),
    "admin": ("admin", "garden"),
}
# Callers who are a person of PEOPLE in another app: the admin in the resident app.
RESIDENT_APP_SELVES = {"admin_res": "admin"}
# Callers with no account at all.
NOBODY = ("anonymous", "unbound")
# Everyone but no_house (whose verification is pending) and the tenant has a verified wallet.
VERIFIED_PEOPLE = tuple(k for k in PEOPLE if k not in ("no_house", "tenant"))
WALLET_FIELDS = ("realname_verified", "realname", "wallet", "agreements", "autodebit")


@dataclass
class World:
    svc: Services
    bank: FakeIcbc
    ids: dict[str, str]  # person key -> account id
    garden_id: str
    bay_id: str
    h1: str  # the target house: 1栋-1单元-101 of 彩云花园
    h2: str  # the neighbour's house: 1栋-1单元-102
    h3: str  # a house of 星河湾
    r_pending: str
    r_dispatched: str
    r_awaiting: str
    r_family: str  # pending, filed by the family member (the owner sees it, read-only)
    complaint_id: str
    complaint_family: str  # filed by the family member
    visitor_id: str
    visitor_family: str  # registered by the family member
    pass_token: str
    bill_target: str  # unpaid bill of h1
    bill_ordered: str  # bill of h1 locked in the owner's order
    bill_h2: str
    order_no: str
    notice_id: str
    import_job: str
    # (category, text) that no outsider may see; "garden" ones only strangers.
    house_secrets: list[tuple[str, str]] = field(default_factory=list)
    garden_secrets: list[tuple[str, str]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"World(target house {self.h1})"

    def account(self, key: str) -> dict[str, Any]:
        found = account_store.by_id(self.svc.db, self.ids[key])
        assert found is not None
        return found


@pytest.fixture(scope="module")
def bank() -> Iterator[FakeIcbc]:
    """One fake ICBC gateway for the module, on a database of its own (the bank's side)."""
    fake = FakeIcbc(
        EmbeddedEngine(None).database,
        fixed_clock(),
        gateway_private_key=generate_private_key_pem(),
        merchant_private_key=generate_private_key_pem(),
    )
    fake.start()
    yield fake
    fake.stop()


def world_settings(bank: FakeIcbc) -> Settings:
    """Sandbox settings with the ICBC client pointed at the fake bank and two templates."""
    return make_settings(
        **bank.settings_overrides(),
        icbc_notify_url=NOTIFY_URL,
        icbc_timeout_s=5.0,
        wechat_templates=TEMPLATES,
        wechat_appid=RESIDENT_APPID,
    )


@pytest.fixture(scope="module")
def wallets(bank: FakeIcbc) -> dict[str, dict[str, Any]]:
    """Each verified person's real-name and wallet fields, from one real verification each.

    Verifying is the bank's work (two signed round trips); doing it once per module and copying
    the outcome into every world keeps the matrix fast, and the wallets stay known to the bank.
    """
    clock = fixed_clock()
    svc = build_services(
        world_settings(bank), clock=clock, db=EmbeddedEngine(None, clock=clock).database
    )
    found = {}
    for key in VERIFIED_PEOPLE:
        p = PEOPLE[key]
        account, _ = account_store.ensure_account(svc.db, p.phone, svc.clock.now(), p.name)
        ticket = realname.start(svc, account, "card", None, details(p), None)
        code = sandbox_outbox(bank.db, p.bank_phone)[0]["code"]
        realname.confirm(svc, account, ticket, code, ["wallet_service", "privacy"])
        done = account_store.by_id(svc.db, account["_id"])
        assert done is not None and done["realname_verified"]
        found[key] = {k: done[k] for k in WALLET_FIELDS}
    return found


def build_world(svc: Services, bank: FakeIcbc, wallets: dict[str, dict[str, Any]]) -> World:
    db, now = svc.db, svc.clock.now()

    def row(room: int, who: str) -> dict[str, Any]:
        p = PEOPLE[who]
        return {
            "building": 1,
            "unit": 1,
            "room": room,
            "owner_name": p.name,
            "owner_phone": p.phone,
        }

    garden = import_owners(svc, GARDEN, [row(101, "owner"), row(102, "other_owner")])
    bay = import_owners(svc, BAY, [row(201, "bay_owner")])
    h1, h2 = (r.house_id for r in garden.rows)
    h3 = bay.rows[0].house_id
    assert h1 and h2 and h3
    community = {"garden": garden.community_id, "bay": bay.community_id}
    houses_of = {
        "owner": (h1, "owner"),
        "family": (h1, "family"),
        "tenant": (h1, "tenant"),
        "other_owner": (h2, "owner"),
        "bay_owner": (h3, "owner"),
    }
    ids = {}
    for key, p in PEOPLE.items():
        account, _ = account_store.ensure_account(db, p.phone, now, p.name)
        ids[key] = account["_id"]
        if key in houses_of:
            house_id, role = houses_of[key]
            house = db["houses"].find_one({"_id": house_id})
            memberships.add(db, house, account["_id"], role, now, account["_id"])
        if key in STAFF_ROLES:
            role, where = STAFF_ROLES[key]
            staff.upsert(db, account["_id"], p.name, role, [community[where]], now)
            accounts.bind_openid(db, account["_id"], "staff", p.openid)
        else:
            accounts.bind_openid(db, account["_id"], "resident", p.openid)
        if key in wallets:
            db["accounts"].update_one({"_id": account["_id"]}, {"$set": wallets[key]})

    for caller, key in RESIDENT_APP_SELVES.items():
        ids[caller] = ids[key]
        accounts.bind_openid(db, ids[key], "resident", openid_of(caller) or "")

    def account(key: str) -> dict[str, Any]:
        return account_store.by_id(db, ids[key]) or {}

    admin, repairman = staff.get(db, ids["admin"]), staff.get(db, ids["repairman"])
    assert admin is not None and repairman is not None

    def new_repair(who: str, house_id: str, text: str) -> str:
        phone = PEOPLE[who].phone
        made = repairs.create(
            svc,
            account(who),
            house_id=house_id,
            category="water_electric",
            description=text,
            contact_phone=phone,
            images=[],
        )
        return made["repair_id"]

    r_pending = new_repair("owner", h1, REPAIR_TEXT)
    r_dispatched = new_repair("owner", h1, REPAIR_TEXT)
    repairs.dispatch(svc, admin, r_dispatched, ids["repairman"])
    r_awaiting = new_repair("owner", h1, REPAIR_TEXT)
    repairs.dispatch(svc, admin, r_awaiting, ids["repairman"])
    repairs.complete(svc, repairman, r_awaiting, [completion_photo(ids["repairman"])], "")
    r_family = new_repair("family", h1, REPAIR_TEXT)
    new_repair("bay_owner", h3, "星河湾的报修")

    def new_complaint(who: str, house_id: str, text: str) -> str:
        fields = {
            "house_id": house_id,
            "kind": "complaint",
            "type": "noise",
            "contact_phone": PEOPLE[who].phone,
            "content": text,
            "images": [],
        }
        return complaints.create(svc, account(who), fields, None)["complaint_id"]

    complaint_id = new_complaint("owner", h1, COMPLAINT_TEXT)
    complaint_family = new_complaint("family", h1, COMPLAINT_TEXT)
    new_complaint("bay_owner", h3, "星河湾的投诉")

    visit = {"name": VISITOR_NAME, "phone": VISITOR_PHONE, "count": 2, "plate": None}
    issued = visitors.register(svc, account("owner"), h1, visit, None, None)
    by_family = visitors.register(svc, account("family"), h1, visit, None, None)

    due = (business_date(now) + timedelta(days=10)).isoformat()
    bill_rows = [
        {"building": 1, "unit": 1, "room": 101, "period": "2026-10", "item": "物业费"},
        {"building": 1, "unit": 1, "room": 101, "period": "2026-11", "item": "物业费"},
        {"building": 1, "unit": 1, "room": 102, "period": "2026-11", "item": "物业费"},
    ]
    results = bill_import.import_bills(
        svc, community["garden"], [{**r, "amount_fen": 12000, "due_date": due} for r in bill_rows]
    )
    assert [r.status for r in results] == ["created"] * 3
    bill = {(b["house_id"], b["period"]): b["_id"] for b in db["bills"].find({})}
    order = payments.open_order(svc, account("owner"), [bill[(h1, "2026-10")]], "wechat")

    notice = notices.publish(
        svc,
        admin,
        community_id=community["garden"],
        title=NOTICE_TITLE,
        content="周六上午停水",
        once=None,
    )
    job = import_jobs.start(
        svc, admin, "bills", bills_file(svc, ids["admin"]), community_id=community["garden"]
    )

    world = World(
        svc=svc,
        bank=bank,
        ids=ids,
        garden_id=community["garden"],
        bay_id=community["bay"],
        h1=h1,
        h2=h2,
        h3=h3,
        r_pending=r_pending,
        r_dispatched=r_dispatched,
        r_awaiting=r_awaiting,
        r_family=r_family,
        complaint_id=complaint_id,
        complaint_family=complaint_family,
        visitor_id=issued["visitor_id"],
        visitor_family=by_family["visitor_id"],
        pass_token=issued["pass_token"],
        bill_target=bill[(h1, "2026-11")],
        bill_ordered=bill[(h1, "2026-10")],
        bill_h2=bill[(h2, "2026-11")],
        order_no=order["_id"],
        notice_id=notice["notice_id"],
        import_job=job["_id"],
    )
    world.house_secrets = [
        ("house_id", h1),
        *(
            ("record_id", x)
            for x in (
                r_pending,
                r_dispatched,
                r_awaiting,
                r_family,
                complaint_id,
                complaint_family,
                world.visitor_id,
                world.visitor_family,
                world.bill_target,
                world.bill_ordered,
                world.order_no,
            )
        ),
        ("text", REPAIR_TEXT),
        ("text", COMPLAINT_TEXT),
        ("visitor_name", VISITOR_NAME),
        ("people", VISITOR_PHONE),
        ("people", mask_phone(VISITOR_PHONE) or ""),
        *person_secrets("owner", "family", "tenant"),
    ]
    world.garden_secrets = [
        ("house_id", h2),
        ("record_id", world.bill_h2),
        ("record_id", world.notice_id),
        ("text", NOTICE_TITLE),
        *person_secrets("other_owner", "repairman_other", "repairman", "guard", "admin"),
    ]
    return world


def person_secrets(*keys: str) -> list[tuple[str, str]]:
    found = []
    for key in keys:
        p = PEOPLE[key]
        found += [("people", p.name), ("people", p.phone), ("people", mask_phone(p.phone) or "")]
    return found


@dataclass(frozen=True)
class Template:
    """The world built once: its settings, its handles and every document it wrote."""

    settings: Settings
    world: World
    documents: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def template(bank: FakeIcbc, wallets: dict[str, dict[str, Any]]) -> Template:
    settings = world_settings(bank)
    clock = fixed_clock()
    db = EmbeddedEngine(None, clock=clock).database
    ensure_indexes(db)
    svc = build_services(settings, clock=clock, db=db)
    world = build_world(svc, bank, wallets)
    documents = {name: list(db[name].find({})) for name in db.list_collection_names()}
    return Template(settings, world, documents)


def seed_world(template: Template, db: Any, clock: Any) -> World:
    """The template's world in ``db`` (empty), with services over it wired to the bank."""
    svc = build_services(template.settings, clock=clock, db=db)
    for name, documents in template.documents.items():
        if documents:
            svc.db[name].insert_many(copy.deepcopy(documents))
    install_services(svc)
    return replace(template.world, svc=svc)


@pytest.fixture
def world(services: Services, template: Template) -> World:
    """A fresh database holding the world (copied from the template: building it for each of
    the thousand-odd cells would take minutes), and services over it wired to the bank."""
    return seed_world(template, services.db, services.clock)


# ---------------------------------------------------------------------------------------------
# A valid request for each row, aimed at the target. A builder may prepare what the request
# needs (an SMS code to quote) and gets the caller, for requests that must name the caller's own
# phone.

Builder = Callable[[World, str], dict[str, Any]]


def person_of(who: str) -> Person:
    """The person behind a caller: admin_res is the admin; callers with no account use
    no_house's details (they prove them by SMS)."""
    return PEOPLE[RESIDENT_APP_SELVES.get(who, who) if who not in NOBODY else "no_house"]


def own_phone(who: str) -> str:
    """The caller's phone (see :func:`person_of`)."""
    return person_of(who).phone


def sms_code(w: World, phone: str, purpose: sms_codes.Purpose) -> str:
    sms_codes.issue(w.svc, phone, purpose)
    return sandbox_outbox(w.svc.db, phone)[0]["code"]


def login_request(w: World, who: str) -> dict[str, Any]:
    phone = own_phone(who)
    return {"phone": phone, "code": sms_code(w, phone, "login")}


def change_phone_request(w: World, who: str) -> dict[str, Any]:
    return {
        "old_code": sms_code(w, own_phone(who), "change_phone_old"),
        "new_phone": NEW_PHONE,
        "new_code": sms_code(w, NEW_PHONE, "change_phone_new"),
    }


def details(p: Any) -> dict[str, Any]:
    """What real-name verification asks of person ``p``."""
    return {
        "name": p.name,
        "id_number": p.id_number,
        "card_no": p.card,
        "bank_phone": p.bank_phone,
        "occupation": 3,
        "id_valid_until": None,
    }


def realname_start_request(w: World, who: str) -> dict[str, Any]:
    p = person_of(who)
    return {
        **details(p),
        "method": "card",
        "id_valid_until": "long_term",
    }


def pending_ticket(w: World) -> str:
    """no_house's pending verification: a ticket ICBC has just texted for."""
    return realname.start(
        w.svc, w.account("no_house"), "card", None, details(PEOPLE["no_house"]), None
    )


def realname_confirm_request(w: World, who: str) -> dict[str, Any]:
    ticket = pending_ticket(w)
    return {
        "ticket": ticket,
        "sms_code": sandbox_outbox(w.bank.db, PEOPLE["no_house"].bank_phone)[0]["code"],
        "agreements": ["wallet_service", "privacy"],
        "autodebit": False,
    }


def bind_request(w: World, who: str) -> dict[str, Any]:
    return {
        "community_id": w.garden_id,
        "building": "1栋",
        "unit": "1单元",
        "room": "101",
        "owner_name": PEOPLE["owner"].name,
        "owner_phone": PEOPLE["owner"].phone if who == "owner" else own_phone(who),
    }


def import_bills_request(w: World, who: str) -> dict[str, Any]:
    due = (business_date(w.svc.clock.now()) + timedelta(days=20)).isoformat()
    row = {"building": 1, "unit": 1, "room": 101, "period": "2026-12", "item": "物业费"}
    return {"community_id": w.garden_id, "rows": [{**row, "amount_fen": 9900, "due_date": due}]}


def bills_file(svc: Services, uploader: str) -> str:
    """A one-bill import file uploaded by that account (a slot under its own prefix)."""
    file_id = f"{SandboxStorage.PREFIX}imports/{uploader}/bills.csv"
    head = "楼栋,单元,房号,账期,收费项目,金额（分）,缴费截止日\n"
    assert isinstance(svc.storage, SandboxStorage)
    svc.storage.put(file_id, (head + "1,1,101,2026-12,物业费,9900,2026-12-31\n").encode())
    return file_id


def start_import_request(w: World, who: str) -> dict[str, Any]:
    uploader = w.ids.get(who, "nobody")
    file_id = bills_file(w.svc, uploader)
    return {"kind": "bills", "file_id": file_id, "community_id": w.garden_id}


def job_request(w: World, who: str) -> dict[str, Any]:
    # Each cell's services have storage of their own: the job's file is uploaded again.
    bills_file(w.svc, w.ids["admin"])
    return {"job_id": w.import_job}


def owner_row() -> dict[str, Any]:
    p = PEOPLE["owner"]
    return {"building": 1, "unit": 1, "room": 101, "owner_name": p.name, "owner_phone": p.phone}


NOTHING: Builder = lambda w, who: {}  # noqa: E731

REQUESTS: dict[str, Builder] = {
    "login.check_account": lambda w, who: {"phone": PEOPLE["owner"].phone},
    "login.send_code": lambda w, who: {"phone": PEOPLE["owner"].phone, "purpose": "login"},
    "login.login": login_request,
    "login.logout": NOTHING,
    "login.me": NOTHING,
    "login.config": NOTHING,
    "login.staff_config": NOTHING,
    "account.profile": NOTHING,
    "account.update_profile": lambda w, who: {"nickname": "彩云用户"},
    "account.change_phone": change_phone_request,
    "account.upload_url": lambda w, who: {"purpose": "avatar", "filename": "me.jpg"},
    "account.realname_start": realname_start_request,
    "account.realname_confirm": realname_confirm_request,
    "account.wallet": NOTHING,
    "account.realname_resend": lambda w, who: {"ticket": pending_ticket(w)},
    "account.wallet_transactions": lambda w, who: {"page": 1},
    "account.autodebit_start": NOTHING,
    "account.set_autodebit": lambda w, who: {"enabled": False},
    "admin.import_owners": lambda w, who: {"community": GARDEN, "rows": [owner_row()]},
    "admin.import_bills": import_bills_request,
    "admin.overview": lambda w, who: {"community_id": w.garden_id},
    "admin.import_upload_url": lambda w, who: {"filename": "账单.xlsx"},
    "admin.start_import": start_import_request,
    "admin.run_import": job_request,
    "admin.import_job": job_request,
    "admin.import_failed_rows": job_request,
    "admin.import_failed_file": job_request,
    "admin.add_staff": lambda w, who: {
        "phone": NEW_PHONE,
        "name": "新门岗",
        "role": "guard",
        "community_ids": [w.garden_id],
    },
    "admin.list_staff": NOTHING,
    "admin.remove_staff": lambda w, who: {"account_id": w.ids["guard"]},
    "admin.update_config": lambda w, who: {
        "repair_categories": [{"code": "water_electric", "name": "水电维修"}],
    },
    "bills.list": lambda w, who: {"house_id": w.h1},
    "bills.pay": lambda w, who: {"bill_ids": [w.bill_target], "method": "card"},
    "bills.order": lambda w, who: {"order_no": w.order_no},
    "bills.open_orders": NOTHING,
    "bills.payment_issues": lambda w, who: {"community_id": w.garden_id},
    "bills.staff_summary": lambda w, who: {"community_id": w.garden_id},
    "bills.staff_list": lambda w, who: {"community_id": w.garden_id, "status": "unpaid"},
    "bills.staff_houses": lambda w, who: {"community_id": w.garden_id},
    "bind_house.communities": NOTHING,
    "bind_house.house_tree": lambda w, who: {"community_id": w.garden_id},
    "bind_house.bind": bind_request,
    "bind_house.my_houses": NOTHING,
    "bind_house.members": lambda w, who: {"house_id": w.h1},
    "bind_house.add_member": lambda w, who: {
        "house_id": w.h1,
        "name": "新家人",
        "phone": NEW_PHONE,
        "role": "family",
    },
    "bind_house.remove_member": lambda w, who: {"house_id": w.h1, "account_id": w.ids["tenant"]},
    "complaint.types": NOTHING,
    "complaint.create": lambda w, who: {
        "house_id": w.h1,
        "kind": "suggestion",
        "type": "environment",
        "contact_phone": own_phone(who),
        "content": "建议增加绿化",
    },
    "complaint.my_list": NOTHING,
    "complaint.detail": lambda w, who: {"complaint_id": w.complaint_id},
    "complaint.detail#family": lambda w, who: {"complaint_id": w.complaint_family},
    "complaint.staff_list": NOTHING,
    "complaint.staff_list#community": lambda w, who: {"community_id": w.garden_id},
    "complaint.reply": lambda w, who: {
        "complaint_id": w.complaint_id,
        "reply": "已联系楼上住户",
        "status": "processing",
    },
    "notify.notices": NOTHING,
    "notify.notices#community": lambda w, who: {"community_id": w.garden_id},
    "notify.notice_detail": lambda w, who: {"notice_id": w.notice_id},
    "notify.publish_notice": lambda w, who: {
        "community_id": w.garden_id,
        "title": "电梯检修",
        "content": "周日电梯检修",
    },
    "notify.messages": NOTHING,
    "notify.mark_read": NOTHING,
    "notify.subscribe": lambda w, who: {"template_ids": [TEMPLATES["repair"]]},
    "notify.remind_unpaid": lambda w, who: {"community_id": w.garden_id},
    "repair.categories": NOTHING,
    "repair.upload_url": lambda w, who: {"purpose": "report", "filename": "leak.jpg"},
    "repair.create": lambda w, who: {
        "house_id": w.h1,
        "category": "door_window",
        "description": "窗户关不上",
        "contact_phone": own_phone(who),
    },
    "repair.my_list": NOTHING,
    "repair.detail": lambda w, who: {"repair_id": w.r_dispatched},
    "repair.detail#family": lambda w, who: {"repair_id": w.r_family},
    "repair.cancel": lambda w, who: {"repair_id": w.r_pending},
    "repair.cancel#family": lambda w, who: {"repair_id": w.r_family},
    "repair.rate": lambda w, who: {"repair_id": w.r_awaiting, "stars": 5, "comment": "很好"},
    "repair.staff_list": NOTHING,
    "repair.staff_list#community": lambda w, who: {"community_id": w.garden_id},
    "repair.repairmen": lambda w, who: {"community_id": w.garden_id},
    "repair.dispatch": lambda w, who: {
        "repair_id": w.r_pending,
        "repairman_id": w.ids["repairman"],
    },
    "repair.assigned": NOTHING,
    "repair.complete": lambda w, who: {
        "repair_id": w.r_dispatched,
        "photos": [completion_photo(w.ids["repairman"])],
        "note": "已更换水管",
    },
    "visitor.register": lambda w, who: {
        "house_id": w.h1,
        "name": "访客甲",
        "phone": "13522223333",
        "count": 1,
    },
    "visitor.pass": lambda w, who: {"token": w.pass_token},
    "visitor.verify": lambda w, who: {"token": w.pass_token},
    "visitor.history": NOTHING,
    "visitor.detail": lambda w, who: {"visitor_id": w.visitor_id},
    "visitor.detail#family": lambda w, who: {"visitor_id": w.visitor_family},
}

# ---------------------------------------------------------------------------------------------
# Calling and checking.

UNBOUND_OPENID = "o-matrix-unbound"
# Collections a refused call may still write: per-caller rate-limit counters.
MAY_WRITE_WHEN_REFUSED = frozenset({"rate_limits"})


def base_action(key: str) -> tuple[str, str]:
    function, _, action = key.partition("#")[0].partition(".")
    return function, action


def openid_of(who: str) -> str | None:
    if who == "anonymous":
        return None
    if who == "unbound":
        return UNBOUND_OPENID
    if who in RESIDENT_APP_SELVES:
        return f"o-matrix-{who}"
    return PEOPLE[who].openid


def app_of(who: str) -> str:
    """The mini-program the caller uses: staff in the staff app, everyone else the resident's."""
    return "staff" if who in STAFF_ROLES else "resident"


def invoke_as(function: str, event: dict[str, Any], who: str) -> dict[str, Any]:
    """A CloudBase call from this caller's WeChat user, in the caller's app."""
    return invoke(function, event, openid_of(who), app_of(who))


Send = Callable[[str, dict[str, Any]], dict[str, Any]]


def over_cloudbase(w: World, who: str) -> Send:
    """Calls as ``wx.cloud.callFunction`` from this caller's WeChat user."""

    def send(key: str, payload: dict[str, Any]) -> dict[str, Any]:
        function, action = base_action(key)
        return invoke_as(function, {"action": action, **payload}, who)

    return send


def over_http(w: World, who: str) -> Send:
    """Calls as ``POST /api/<function>`` with this caller's session token (none: anonymous)."""
    token = session_token(w, who)

    def send(key: str, payload: dict[str, Any]) -> dict[str, Any]:
        function, action = base_action(key)
        return http(function, {"action": action, **payload}, token=token)[1]

    return send


def session_token(w: World, who: str) -> str | None:
    """A session of the caller's app (none for callers without an account)."""
    if who in NOBODY:
        return None
    return sessions.open_session(w.svc, w.ids[who], app_of(who))[0].token


def outcome(reply: dict[str, Any]) -> str:
    if reply.get("ok") is True:
        return OK
    assert reply.get("ok") is False, reply
    return reply["error"]["code"]


def snapshot(db: Any) -> dict[str, list[str]]:
    """Every document of every collection, comparable before and after a call."""
    return {
        name: sorted(repr(sorted(doc.items())) for doc in db[name].find({}))
        for name in sorted(db.list_collection_names())
    }


def changed_collections(before: dict[str, list[str]], after: dict[str, list[str]]) -> set[str]:
    return {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}


def leaked(w: World, key: str, who: str, reply: dict[str, Any]) -> list[str]:
    """The target's identifiers found in an outsider's reply (empty for insiders)."""
    if who not in OUTSIDERS:
        return []
    secrets = list(w.house_secrets)
    if who in STRANGERS:
        secrets += w.garden_secrets
    exempt = LEAK_EXEMPT.get(key.partition("#")[0], frozenset())
    text = json.dumps(reply, ensure_ascii=False)
    return [f"{kind}:{value}" for kind, value in secrets if kind not in exempt and value in text]


def reference_errors(key: str) -> list[str]:
    """The codes the API reference lists for the action of a matrix row."""
    function, action = key.split("#")[0].split(".")
    return documented_errors(handler(function).actions[action])


def run_cell(w: World, key: str, who: str, transport: Callable[[World, str], Send]) -> None:
    send = transport(w, who)
    payload = REQUESTS[key](w, who)
    expected = EXPECTED[key][CALLERS.index(who)]
    before = snapshot(w.svc.db)
    reply = send(key, payload)
    got = outcome(reply)
    assert got == expected, f"{key} as {who}: expected {expected}, got {reply}"
    assert got == "OK" or got in reference_errors(key), f"{key} answers {got}, not in its reference"
    if got in REFUSED:
        writes = changed_collections(before, snapshot(w.svc.db)) - MAY_WRITE_WHEN_REFUSED
        assert not writes, f"{key} as {who} was refused ({got}) but wrote {sorted(writes)}"
    found = leaked(w, key, who, reply)
    assert not found, f"{key} as {who} ({got}) shows the target's {found}: {reply}"


CELLS = [pytest.param(key, who, id=f"{key}-{who}") for key in EXPECTED for who in CALLERS]

# The HTTP path resolves the caller from the bearer token instead of the openid; the same matrix
# holds for the callers that can exist there (no token, and tokens of these accounts).
HTTP_CALLERS = (
    "anonymous",
    "no_house",
    "tenant",
    "other_owner",
    "owner",
    "admin_other",
    "admin",
    "admin_res",
)
HTTP_CELLS = [pytest.param(key, who, id=f"{key}-{who}") for key in EXPECTED for who in HTTP_CALLERS]


# ---------------------------------------------------------------------------------------------
# The tests.


def every_action() -> set[str]:
    return {f"{name}.{action}" for name in function_names() for action in handler(name).actions}


def test_every_action_of_every_function_has_a_row() -> None:
    actions = every_action()
    rows = {key.partition("#")[0] for key in EXPECTED}
    assert actions - rows == set(), "actions with no row in EXPECTED"
    assert rows - actions == set(), "rows in EXPECTED for actions that do not exist"
    assert set(REQUESTS) == set(EXPECTED), "every row needs a valid request, and only rows do"
    for key, cells in EXPECTED.items():
        assert len(cells) == len(CALLERS), key
        assert all(c == OK or c.isupper() for c in cells), key
    assert set(OUTSIDERS) <= set(CALLERS) and set(STRANGERS) <= set(OUTSIDERS)


def test_the_matrix_refuses_every_action_to_somebody_but_the_open_ones() -> None:
    # A row that allows everyone must be meant to: only these take anonymous callers.
    open_rows = {key for key, cells in EXPECTED.items() if cells[0] == OK}
    assert open_rows == {
        "login.check_account",
        "login.send_code",
        "login.login",
        "login.config",
        "login.staff_config",
        "visitor.pass",
    }
    # And no anonymous or unbound caller gets anything else.
    for key, cells in EXPECTED.items():
        if key not in open_rows:
            assert cells[0] == cells[1] == U, key


@pytest.mark.parametrize(("key", "who"), CELLS)
def test_cell(world: World, key: str, who: str) -> None:
    run_cell(world, key, who, over_cloudbase)


@pytest.mark.parametrize(("key", "who"), HTTP_CELLS)
def test_cell_over_http(world: World, key: str, who: str) -> None:
    run_cell(world, key, who, over_http)


# The two functions with no client actions.


def client_events() -> list[dict[str, Any]]:
    return [
        {},
        {"action": "run"},
        {"action": "timer"},
        {"action": "notify"},
        {"Type": "Timer", "TriggerName": "scheduler-timer", "Time": "2026-01-01T00:00:00Z"},
    ]


@pytest.mark.parametrize("function", ["scheduler", "icbc_callback"])
def test_functions_without_client_actions_refuse_every_mini_program_caller(
    world: World, function: str
) -> None:
    assert handler(function).actions == {}
    before = snapshot(world.svc.db)
    for who in CALLERS:
        for event in client_events():
            if who == "anonymous" and "Type" in event:
                # With no caller at all the timer's shape is the platform's timer: every
                # mini-program call carries its user's openid (covered by the others).
                continue
            reply = invoke_as(function, event, who)
            assert outcome(reply) == "UNKNOWN_ACTION", (function, who, event, reply)
    assert changed_collections(before, snapshot(world.svc.db)) == set()


def test_the_scheduler_refuses_http_callers(world: World) -> None:
    tokens = {who: session_token(world, who) for who in ("anonymous", "owner", "admin")}
    before = snapshot(world.svc.db)
    timer_like = {"Type": "Timer", "TriggerName": "scheduler-timer"}
    for who, token in tokens.items():
        for body in (timer_like, {"action": "run"}):
            status, reply = http("scheduler", body, token=token)
            assert (status, outcome(reply)) == (400, "UNKNOWN_ACTION"), (who, body, reply)
    assert changed_collections(before, snapshot(world.svc.db)) == set()


def test_the_icbc_callback_answers_a_client_json_call_as_a_failed_notify(world: World) -> None:
    """Over HTTP the callback speaks only ICBC's signed form. A client's JSON, with or without a
    session, is an unsigned notify: answered as a failure in ICBC's signed form, applied to
    nothing, and kept for audit."""
    token = session_token(world, "owner")
    before = snapshot(world.svc.db)
    for body in ({"action": "notify", "order_no": world.order_no}, {}):
        for headers in ({}, {"authorization": f"Bearer {token}"}):
            event = {
                "httpMethod": "POST",
                "path": "/icbc/notify",
                "headers": {"content-type": "application/json", **headers},
                "body": json.dumps(body),
                "isBase64Encoded": False,
            }
            reply = handler("icbc_callback")(event, {})
            assert reply["statusCode"] == 200
            assert world.bank.verify_reply(reply["body"])
            assert json.loads(reply["body"])["response_biz_content"]["return_code"] == 1
    assert changed_collections(before, snapshot(world.svc.db)) == {"icbc_notifies"}
    assert world.svc.db["payment_orders"].find_one({"_id": world.order_no})["status"] == "pending"
