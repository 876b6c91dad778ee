"""The sandbox's demo data set: two communities, their owners and the property staff.

The constants below are the documentation: the README lists them and a test checks the seeded
database against them, so anyone can log in at once with a code from ``/dev/sms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from caiyun.domain import bill_import, owner_import
from caiyun.services import Services
from caiyun.stores import accounts, memberships, staff
from caiyun.stores import houses as house_store
from caiyun.stores.communities import COMMUNITIES


@dataclass(frozen=True)
class DemoHouse:
    """A house and its owner as the import file lists them."""

    building: str
    unit: str
    room: str
    owner_name: str
    owner_phone: str

    @property
    def label(self) -> str:
        """How the product names the house: ``1栋-1单元-101``."""
        return f"{self.building}-{self.unit}-{self.room}"


@dataclass(frozen=True)
class DemoCommunity:
    """A community with its houses."""

    province: str
    city: str
    district: str
    name: str
    address: str
    houses: tuple[DemoHouse, ...]

    def record(self) -> dict[str, str]:
        """The community as ``import_owners`` takes it."""
        return {
            "province": self.province,
            "city": self.city,
            "district": self.district,
            "name": self.name,
            "address": self.address,
        }

    def rows(self) -> list[dict[str, str]]:
        """The houses as rows of the owner import."""
        return [
            {
                "building": h.building,
                "unit": h.unit,
                "room": h.room,
                "owner_name": h.owner_name,
                "owner_phone": h.owner_phone,
            }
            for h in self.houses
        ]


@dataclass(frozen=True)
class DemoStaff:
    """A staff member; ``communities`` are community names, ``None`` = company-wide."""

    phone: str
    name: str
    role: staff.StaffRole
    communities: tuple[str, ...] | None


CAIYUN_GARDEN = "彩云花园"
YUNQI_COURT = "云栖苑"

DEMO_COMMUNITIES: tuple[DemoCommunity, ...] = (
    DemoCommunity(
        province="广东省",
        city="深圳市",
        district="南山区",
        name=CAIYUN_GARDEN,
        address="深圳市南山区彩云路 88 号",
        houses=(
            DemoHouse("1栋", "1单元", "101", "张伟", "13800000001"),
            DemoHouse("1栋", "1单元", "102", "李娜", "13800000002"),
            DemoHouse("1栋", "2单元", "201", "王芳", "13800000003"),
            DemoHouse("2栋", "1单元", "301", "刘洋", "13800000004"),
            DemoHouse("2栋", "1单元", "302", "陈静", "13800000005"),
        ),
    ),
    DemoCommunity(
        province="广东省",
        city="广州市",
        district="天河区",
        name=YUNQI_COURT,
        address="广州市天河区云栖路 66 号",
        houses=(
            DemoHouse("1栋", "1单元", "1201", "杨磊", "13800000006"),
            DemoHouse("3栋", "2单元", "1201", "赵敏", "13800000007"),
            DemoHouse("3栋", "2单元", "1202", "黄强", "13800000008"),
            # One owner with a house in each community: notices come in two groups.
            DemoHouse("5栋", "1单元", "501", "张伟", "13800000001"),
        ),
    ),
)

DEMO_STAFF: tuple[DemoStaff, ...] = (
    DemoStaff("13900000001", "周敏", "admin", None),
    DemoStaff("13900000002", "吴刚", "admin", (CAIYUN_GARDEN,)),
    DemoStaff("13900000003", "郑师傅", "repairman", (CAIYUN_GARDEN, YUNQI_COURT)),
    DemoStaff("13900000004", "孙立", "guard", (CAIYUN_GARDEN,)),
    # An owner (2栋-1单元-302) who is also a guard: one person in both mini-programs.
    DemoStaff("13800000005", "陈静", "guard", (CAIYUN_GARDEN,)),
)


@dataclass(frozen=True)
class DemoBill:
    """A bill every demo house gets."""

    period: str
    item: str
    amount_fen: int
    due_date: str


DEMO_BILLS: tuple[DemoBill, ...] = (
    DemoBill("2026-10", "物业费", 26800, "2026-10-31"),
    DemoBill("2026-11", "物业费", 26800, "2026-11-30"),
    DemoBill("2026-11", "公摊水电费", 3560, "2026-11-30"),
)

# Owners whose houses are already bound, so bills, notices and repairs work at once; every other
# owner binds through bind_house.bind (the details are in DEMO_COMMUNITIES).
DEMO_BOUND_OWNERS: tuple[str, ...] = ("13800000001",)


def needs_seed(db: Any) -> bool:
    """Whether the database holds no community yet (a fresh sandbox).

    Accounts alone do not count: ``caiyun admin add-staff`` may run before the first
    ``caiyun dev`` and must not cost the developer the demo set.
    """
    return db[COMMUNITIES].find_one({}, {"_id": 1}) is None


def seed_demo(services: Services) -> bool:
    """Load the demo data set into a fresh database; False (and no change) if it has data.

    Every write is an upsert on a unique key, so two sandboxes starting at once on one data
    directory still make one copy.
    """
    if not needs_seed(services.db):
        return False
    ids: dict[str, str] = {}
    for community in DEMO_COMMUNITIES:
        report = owner_import.import_owners(services, community.record(), community.rows())
        failed = [r for r in report.rows if r.status == "error"]
        if failed:
            raise RuntimeError(f"demo row {failed[0].row} of {community.name}: {failed[0].reason}")
        ids[community.name] = report.community_id
        bill_import.import_bills(
            services,
            report.community_id,
            [
                {
                    "building": h.building,
                    "unit": h.unit,
                    "room": h.room,
                    "period": b.period,
                    "item": b.item,
                    "amount_fen": b.amount_fen,
                    "due_date": b.due_date,
                }
                for h in community.houses
                for b in DEMO_BILLS
            ],
        )
        for result, house in zip(report.rows, community.houses, strict=True):
            if house.owner_phone in DEMO_BOUND_OWNERS and result.house_id:
                owner = accounts.by_phone(services.db, house.owner_phone)
                assert owner is not None  # the import made every owner's account
                memberships.add(
                    services.db,
                    house_store.get(services.db, result.house_id) or {},
                    owner["_id"],
                    "owner",
                    services.clock.now(),
                    owner["_id"],
                )
    for member in DEMO_STAFF:
        now = services.clock.now()
        account, _ = accounts.ensure_account(services.db, member.phone, now, member.name)
        scope = None if member.communities is None else [ids[n] for n in member.communities]
        staff.upsert(services.db, account["_id"], member.name, member.role, scope, now)
    return True
