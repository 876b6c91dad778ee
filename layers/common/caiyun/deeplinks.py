"""The mini-program pages the back end links to: inbox messages' ``page`` (also the page a
WeChat subscription message opens) and the visitor pass's ``share_path``.

Both apps must have these pages at these paths. The API reference lists them from here, and a
test checks that every ``/pages/...`` path the layer writes is one of them and that each of them
is still written somewhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeepLink:
    """One page: its path, the query it is opened with, which apps have it and what it shows."""

    path: str
    query: str
    apps: tuple[str, ...]
    shows: str


DEEP_LINKS: tuple[DeepLink, ...] = (
    DeepLink(
        "/pages/bills/index",
        "",
        ("resident",),
        "the caller's bills (`bills.list`): a new bill, a payment reminder",
    ),
    DeepLink(
        "/pages/bills/order",
        "order_no=<order_no>",
        ("resident",),
        "one payment order (`bills.order {order_no}`): the payment result",
    ),
    DeepLink(
        "/pages/realname/index",
        "",
        ("resident",),
        "real-name verification (`account.realname_start`): ICBC refused to open the account, "
        "verify again",
    ),
    DeepLink(
        "/pages/repair/detail",
        "id=<repair_id>",
        ("resident", "staff"),
        "one repair (`repair.detail {repair_id: id}`): progress for the reporter, a new or "
        "dispatched repair for staff",
    ),
    DeepLink(
        "/pages/complaint/detail",
        "id=<complaint_id>",
        ("resident", "staff"),
        "one complaint or suggestion (`complaint.detail {complaint_id: id}`): a reply for the "
        "reporter, a new one for admins",
    ),
    DeepLink(
        "/pages/notice/detail",
        "id=<notice_id>",
        ("resident",),
        "one community notice (`notify.notice_detail {notice_id: id}`)",
    ),
    DeepLink(
        "/pages/visitor/history",
        "",
        ("resident",),
        "the caller's visitor registrations (`visitor.history`): a visitor has arrived",
    ),
    DeepLink(
        "/pages/visitor/pass",
        "token=<pass_token>",
        ("resident",),
        "a visitor pass as the visitor sees it (`visitor.pass {token}`); `share_path` of "
        "`visitor.register`, opened by whoever it is shared with",
    ),
)
