"""What the two mini-programs are configured with, so the property company changes it without
an app release: the agreements a resident signs (versioned texts, and which are required for
which real-name method), the repair categories and the complaint types.

One document (``app_config``, ``_id: "current"``) holds it, written by a company-wide admin
through ``admin.update_config``; until then the defaults below are in force. Every version of an
agreement's text is also kept in ``agreement_texts`` (``<code>@<version>``), so the text a
resident signed can always be shown again: the signature records the version.

A warm container keeps what it read for ``config_cache_s`` seconds (``Services.memo``): a change
reaches every container within that time. A code the cached copy does not know is checked
against the stored document once before it is refused, so a category just added is accepted at
once everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from caiyun import labels
from caiyun.clock import business_date, iso
from caiyun.data.schema import declare
from caiyun.domain import communities
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores.staff import StaffRecord

AgreementCode = Literal["wallet_service", "autodebit", "privacy"]
# When an agreement must be signed: real-name verification by ICBC card, by opening a wallet,
# or turning auto-debit (代扣) on.
Trigger = Literal["card", "wallet", "autodebit"]
OptionList = Literal["repair_categories", "complaint_types"]

APP_CONFIG = declare("app_config")
AGREEMENT_TEXTS = declare("agreement_texts")
_CURRENT = "current"
_MEMO_KEY = "app_config"

# Which option list holds the labels of which enumeration.
_LISTS: dict[OptionList, str] = {
    "repair_categories": "repair_category",
    "complaint_types": "complaint_type",
}


@dataclass(frozen=True)
class Agreement:
    """One agreement as a resident reads and signs it."""

    code: AgreementCode
    title: str
    version: str
    text: str
    required_when: tuple[Trigger, ...]


_SAMPLE = "（示例文本：物业公司须在管理后台替换为经法务审核的正式文本。）"

DEFAULT_AGREEMENTS: tuple[Agreement, ...] = (
    Agreement(
        "wallet_service",
        "工银e钱包服务协议",
        "2026.1",
        "您同意由中国工商银行为您开立或绑定工银e钱包，用于缴纳物业费用。账户资金由工商银行"
        "管理，本平台不保存您的银行卡密码，仅在您发起缴费时请求银行扣款。" + _SAMPLE,
        ("card", "wallet"),
    ),
    Agreement(
        "autodebit",
        "物业费代扣协议",
        "2026.1",
        "您授权本平台在物业账单到期后，通过工商银行从您的工银e钱包自动扣缴该账单金额；单笔"
        "扣款不超过协议限额，您可随时在“我的”页面关闭代扣。" + _SAMPLE,
        ("autodebit",),
    ),
    Agreement(
        "privacy",
        "隐私政策",
        "2026.1",
        "为完成实名认证与缴费，我们收集您的姓名、身份证号、银行卡号及银行预留手机号，加密保存，"
        "仅用于向工商银行核验身份与办理缴费，不向其他第三方提供。" + _SAMPLE,
        ("card", "wallet"),
    ),
)


def _default_options(list_name: OptionList) -> dict[str, str]:
    return dict(labels.LABELS[_LISTS[list_name]])


@dataclass(frozen=True)
class AppConfig:
    """The configuration in force; ``revision`` 0 means the defaults (nothing stored yet)."""

    revision: int
    agreements: tuple[Agreement, ...]
    repair_categories: dict[str, str]
    complaint_types: dict[str, str]
    updated_at: datetime | None = None

    def options(self, list_name: OptionList) -> dict[str, str]:
        """An option list as code → label, in the order the apps offer it."""
        return self.repair_categories if list_name == "repair_categories" else self.complaint_types

    def agreement(self, code: str) -> Agreement:
        """The agreement with this code."""
        return next(a for a in self.agreements if a.code == code)

    def required_agreements(self, trigger: Trigger) -> list[str]:
        """The codes a resident must have agreed to for ``trigger``: real-name verification by
        card or by opening a wallet, or turning auto-debit on."""
        return [a.code for a in self.agreements if trigger in a.required_when]

    def missing_agreements(self, trigger: Trigger, agreed: list[str]) -> dict[str, Any] | None:
        """The ``details`` of the refusal naming each agreement ``trigger`` requires that is
        not in ``agreed``; None when nothing is missing."""
        missing = [c for c in self.required_agreements(trigger) if c not in agreed]
        if not missing:
            return None
        return {
            "fields": {f"agreements.{c}": f"须同意《{self.agreement(c).title}》" for c in missing}
        }


DEFAULTS = AppConfig(
    revision=0,
    agreements=DEFAULT_AGREEMENTS,
    repair_categories=_default_options("repair_categories"),
    complaint_types=_default_options("complaint_types"),
)


def _options_of(doc: dict[str, Any], list_name: OptionList) -> dict[str, str]:
    stored = doc.get(list_name)
    if not stored:
        return _default_options(list_name)
    return {o["code"]: o["name"] for o in stored}


def _from_doc(doc: dict[str, Any] | None) -> AppConfig:
    if doc is None:
        return DEFAULTS
    return AppConfig(
        revision=doc["revision"],
        agreements=tuple(
            Agreement(a["code"], a["title"], a["version"], a["text"], tuple(a["required_when"]))
            for a in doc["agreements"]
        ),
        repair_categories=_options_of(doc, "repair_categories"),
        complaint_types=_options_of(doc, "complaint_types"),
        updated_at=doc.get("updated_at"),
    )


def current(services: Services, fresh: bool = False) -> AppConfig:
    """The configuration in force: this container's copy while it is recent, else read."""
    now = services.clock.now()
    kept = services.memo.get(_MEMO_KEY)
    if not fresh and kept is not None and kept[0] > now:
        return kept[1]
    return _remember(services, _from_doc(services.db[APP_CONFIG].find_one({"_id": _CURRENT})), now)


def _remember(services: Services, config: AppConfig, now: datetime) -> AppConfig:
    """Keep ``config`` in this container for ``config_cache_s`` seconds from ``now``."""
    services.memo[_MEMO_KEY] = (now + timedelta(seconds=services.settings.config_cache_s), config)
    return config


def option_name(services: Services, list_name: OptionList, code: str, field_name: str) -> str:
    """The label of ``code`` in an option list in force (what a new record keeps); a code the
    list does not have is INVALID_ARGUMENT naming ``field_name``."""
    name = current(services).options(list_name).get(code)
    if name is None:
        name = current(services, fresh=True).options(list_name).get(code)
    if name is None:
        raise AppError(
            "INVALID_ARGUMENT",
            "所选类别不存在，请刷新后重试",
            {"fields": {field_name: "不在可选范围内"}},
        )
    return name


def _next_version(previous: str, now: datetime) -> str:
    # ``<year>.<n>``: the n-th text of the agreement published in that year.
    year = business_date(now).year
    prefix, _, number = previous.partition(".")
    if prefix == str(year) and number.isdigit():
        return f"{year}.{int(number) + 1}"
    return f"{year}.1"


def _check_admin(admin: StaffRecord) -> None:
    if admin.get("role") != "admin" or not admin.get("all_communities"):
        raise AppError("FORBIDDEN", "只有总部管理员可以修改应用配置")


def _edited_agreements(
    before: AppConfig, edits: list[dict[str, Any]] | None, now: datetime
) -> list[dict[str, Any]]:
    if edits is None:
        return [_agreement_doc(a) for a in before.agreements]
    by_code = {e["code"]: e for e in edits}
    result = []
    for old in before.agreements:
        edit = by_code[old.code]
        changed = (edit["title"], edit["text"]) != (old.title, old.text)
        version = _next_version(old.version, now) if changed else old.version
        result.append(
            {
                "code": old.code,
                "title": edit["title"],
                "version": version,
                "text": edit["text"],
                "required_when": list(dict.fromkeys(edit["required_when"])),
            }
        )
    return result


def _agreement_doc(agreement: Agreement) -> dict[str, Any]:
    return {
        "code": agreement.code,
        "title": agreement.title,
        "version": agreement.version,
        "text": agreement.text,
        "required_when": list(agreement.required_when),
    }


def update(
    services: Services,
    admin: StaffRecord,
    changes: dict[str, Any],
    expected_revision: int | None,
) -> AppConfig:
    """Replace the parts of the configuration given in ``changes`` (``agreements``,
    ``repair_categories``, ``complaint_types``); only a company-wide admin may.

    An agreement whose title or text changes gets a new version; the versions in force before
    and after are kept in ``agreement_texts`` before the configuration names them. The write
    is conditional on the revision it was made from (``expected_revision`` if the admin names
    the one they edited), so of two admins saving at once the second is told CONFLICT instead
    of silently undoing the first.
    """
    _check_admin(admin)
    db, now = services.db, services.clock.now()
    before = current(services, fresh=True)
    if expected_revision is not None and expected_revision != before.revision:
        raise _changed_meanwhile()
    agreements = _edited_agreements(before, changes.get("agreements"), now)
    doc: dict[str, Any] = {
        "revision": before.revision + 1,
        "agreements": agreements,
        "updated_at": now,
        "updated_by": admin["_id"],
    }
    for list_name in _LISTS:
        edited = changes.get(list_name)
        kept = (
            before.options(list_name) if edited is None else {o["code"]: o["name"] for o in edited}
        )
        doc[list_name] = [{"code": code, "name": name} for code, name in kept.items()]
    texts = {
        f"{a['code']}@{a['version']}": a
        for a in [*(_agreement_doc(a) for a in before.agreements), *agreements]
    }
    _keep_texts(db, texts, now)
    try:
        if before.revision == 0:
            db[APP_CONFIG].insert_one({"_id": _CURRENT, **doc})
        elif (
            db[APP_CONFIG]
            .update_one({"_id": _CURRENT, "revision": before.revision}, {"$set": doc})
            .matched_count
            == 0
        ):
            raise _changed_meanwhile()
    except DuplicateKeyError:
        raise _changed_meanwhile() from None
    return _remember(services, _from_doc({"_id": _CURRENT, **doc}), now)


def _changed_meanwhile() -> AppError:
    return AppError("CONFLICT", "配置已被他人修改，请刷新后重试")


def _keep_texts(db: Any, texts: dict[str, dict[str, Any]], now: datetime) -> None:
    """Store each agreement text by ``<code>@<version>`` unless it is stored already (a text
    never changes once published: a change is a new version)."""
    try:
        db[AGREEMENT_TEXTS].bulk_write(
            [
                UpdateOne(
                    {"_id": text_id},
                    {
                        "$setOnInsert": {
                            "code": a["code"],
                            "version": a["version"],
                            "title": a["title"],
                            "text": a["text"],
                            "published_at": now,
                        }
                    },
                    upsert=True,
                )
                for text_id, a in texts.items()
            ],
            ordered=False,
        )
    except BulkWriteError as exc:
        # Another save stored the same version at the same moment: it is there either way.
        if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
            raise


def view(config: AppConfig) -> dict[str, Any]:
    """The configuration as the admin console shows it."""
    return {
        "revision": config.revision,
        "updated_at": iso(config.updated_at),
        "agreements": [_agreement_doc(a) for a in config.agreements],
        **{name: _option_list(config.options(name)) for name in _LISTS},
    }


def _option_list(options: dict[str, str]) -> list[dict[str, str]]:
    return [{"code": code, "name": name} for code, name in options.items()]


def _templates(services: Services, app: str) -> dict[str, str]:
    configured = services.settings.wechat_templates
    return {p: configured[p] for p in labels.LABELS[f"{app}_template"] if configured.get(p)}


def _labels(config: AppConfig) -> dict[str, list[dict[str, str]]]:
    shown = {kind: labels.options(kind) for kind in labels.LABELS}
    for list_name, kind in _LISTS.items():
        shown[kind] = _option_list(config.options(list_name))
    return shown


def for_app(services: Services, app: str) -> dict[str, Any]:
    """What one mini-program needs before anyone signs in; nothing in it is personal.

    The resident app also gets the agreements and the regions (省/市/区 of the communities
    there are, for the binding picker).
    """
    config = current(services)
    shown: dict[str, Any] = {
        "revision": config.revision,
        "templates": _templates(services, app),
        "repair_categories": _option_list(config.repair_categories),
        "complaint_types": _option_list(config.complaint_types),
        "labels": _labels(config),
    }
    if app == "resident":
        shown["agreements"] = [_agreement_doc(a) for a in config.agreements]
        shown["regions"] = communities.regions(services.db)
    return shown
