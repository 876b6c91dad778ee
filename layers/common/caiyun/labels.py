"""Every code the API sends or takes, with the Chinese label the apps show for it.

One convention holds across the API: a reply field holding a code (``status``, ``role``,
``category``...) has a sibling ``<field>_name`` with its label, and an option list (repair
categories, complaint types, ``config`` labels) is a list of ``{code, name}``. The API reference
lists every enumeration below with its labels, and a test checks that every literal of the
contract models is one of them. Repair categories and complaint types here are the defaults: the
property company may change them (``admin.update_config``), and a record keeps the label it was
filed under.
"""

from __future__ import annotations

from typing import Literal, get_args

# The two mini-programs (each with its own appid and openids).
App = Literal["resident", "staff"]
APPS: tuple[App, ...] = ("resident", "staff")

# What an inbox message is about: the domain writes these and the contract sends them.
MessageKind = Literal[
    "bill",
    "payment",
    "reminder",
    "repair",
    "repair_filed",
    "complaint",
    "complaint_filed",
    "notice",
    "visitor",
]

# name -> {code: label}, in the order the apps offer them.
LABELS: dict[str, dict[str, str]] = {
    "app": {"resident": "业主端", "staff": "物业端"},
    "resident_role": {"owner": "业主", "family": "家人", "tenant": "租户"},
    "staff_role": {"admin": "物业管理员", "repairman": "维修员", "guard": "门岗"},
    "bill_status": {"unpaid": "待缴", "paying": "支付中", "paid": "已缴"},
    "house_dues": {"unpaid": "未交", "paid": "已交"},
    "order_status": {
        "pending": "待支付",
        "paid": "已支付",
        "failed": "支付失败",
        "closed": "已关闭",
    },
    "bank_method": {"card": "工行借记卡", "wallet": "工银e钱包"},
    "pay_method": {"wechat": "微信支付", "wallet": "工银e钱包", "card": "工行借记卡"},
    "pay_with": {"wechat": "微信支付", "account": "银行账户扣款", "autodebit": "自动扣缴"},
    # ICBC's account classes (个人银行账户分类: Class I is a full debit card account).
    "account_class": {"I": "Ⅰ类账户", "II": "Ⅱ类电子账户", "III": "Ⅲ类电子账户"},
    "realname_status": {"verified": "已认证", "pending": "开户中"},
    "payment_issue": {
        "extra_settlement": "重复付款",
        "bills_paid_elsewhere": "账单已另行缴清",
        "bank_refund": "银行退款",
        "amount_mismatch": "金额不符",
    },
    # ICBC's occupation codes of the JFT opening (openacct/V2), sent as numbers.
    "occupation": {
        "1": "公务员",
        "2": "事业单位员工",
        "3": "企业员工",
        "4": "军人、警察",
        "5": "工人",
        "6": "农民",
        "7": "管理人员",
        "8": "技术人员",
        "9": "私营业主",
        "10": "文体工作者",
        "11": "自由职业者",
        "12": "学生",
        "13": "无",
    },
    "repair_status": {
        "pending": "待处理",
        "dispatched": "待上门",
        "awaiting_rating": "待评价",
        "completed": "已完成",
        "cancelled": "已取消",
    },
    "repair_category": {
        "water_electric": "水电维修",
        "door_window": "门窗维修",
        "pipe_unclog": "管道疏通",
        "appliance": "电器维修",
        "public_facility": "公共设施",
        "other": "其他",
    },
    "repair_event": {
        "created": "提交报修",
        "dispatched": "已派单",
        "redispatched": "已改派",
        "work_done": "维修完成",
        "rated": "已评价",
        "auto_closed": "自动完成",
        "cancelled": "已取消",
    },
    "actor_role": {
        "resident": "住户",
        "admin": "物业管理员",
        "repairman": "维修员",
        "system": "系统",
    },
    "upload_purpose": {
        "avatar": "头像",
        "complaint": "投诉建议图片",
        "report": "报修图片",
        "completion": "完工照片",
    },
    "complaint_kind": {"complaint": "投诉", "suggestion": "建议"},
    "complaint_status": {"submitted": "已提交", "processing": "处理中", "resolved": "已解决"},
    "complaint_type": {
        "engineering": "工程维修",
        "service_staff": "服务人员",
        "environment": "环境绿化",
        "security": "安保秩序",
        "parking": "停车管理",
        "facilities": "公共设施",
        "noise": "噪音扰民",
        "other": "其他",
    },
    "pass_status": {"valid": "有效", "used": "已使用", "expired": "已过期", "forged": "无效通行证"},
    "message_kind": {
        "bill": "新账单",
        "payment": "缴费结果",
        "reminder": "缴费提醒",
        "repair": "报修进度",
        "repair_filed": "新报修",
        "complaint": "投诉建议回复",
        "complaint_filed": "新投诉建议",
        "notice": "小区公告",
        "visitor": "访客到达",
    },
    # The WeChat subscription-message templates each app asks its users to accept, by
    # purpose (the keys of CAIYUN_WECHAT_TEMPLATES).
    "resident_template": {
        "bill": "新账单通知",
        "payment": "缴费结果通知",
        "reminder": "缴费提醒",
        "repair": "报修进度通知",
        "complaint": "投诉处理结果通知",
        "visitor": "访客到访提醒",
    },
    "staff_template": {
        "repair_assigned": "维修派单通知",
        "repair_filed": "新报修提醒",
        "complaint_filed": "新投诉建议提醒",
    },
    "sms_purpose": {
        "login": "登录",
        "change_phone_old": "更换手机号（原号码）",
        "change_phone_new": "更换手机号（新号码）",
    },
    "agreement": {
        "wallet_service": "工银e钱包服务协议",
        "autodebit": "代扣协议",
        "privacy": "隐私政策",
    },
    "agreement_trigger": {
        "card": "工行借记卡认证",
        "wallet": "开通e钱包认证",
        "autodebit": "开通代扣",
    },
    "import_row_status": {
        "created": "新增",
        "updated": "已更新",
        "unchanged": "无变化",
        "error": "有误",
    },
    "import_kind": {"owners": "业主导入", "bills": "账单导入"},
    "import_job_status": {"running": "导入中", "done": "已完成"},
    "upload_provider": {"sandbox": "本地沙箱", "cloudbase": "云开发存储", "cos": "腾讯云 COS"},
}

assert set(get_args(MessageKind)) == set(LABELS["message_kind"]), "one list of message kinds"

# Enumerations the property company may change; the ones above are then only the defaults.
CONFIGURABLE = frozenset({"repair_category", "complaint_type"})

# What the reference says besides the labels, where a code means more than its label.
NOTES: dict[str, str] = {
    "bill_status": (
        "As a filter (`bills.list`, `bills.staff_list`), `unpaid` is every bill not yet paid, "
        "`paying` included; `paying` is only the bills in a payment not finished yet. Every "
        "`unpaid_..._fen` and `unpaid_count` sums the same bills as the `unpaid` filter."
    ),
    "house_dues": "A house is `unpaid` (未交) while any of its bills is not yet paid.",
    "pass_status": "`forged` is only ever a `visitor.verify` result.",
    "repair_status": (
        "`completed` repairs closed by the timer after the rating window show `auto_closed`."
    ),
    "message_kind": (
        "`repair_filed` and `complaint_filed` reach the community's admins (staff app)."
    ),
}


def name(kind: str, code: str | int) -> str:
    """The label of ``code`` in the enumeration ``kind`` (the code itself if it has none: a
    configurable code since removed still shows something). Numeric codes (ICBC's) are
    looked up by their decimal form."""
    return LABELS[kind].get(str(code), str(code))


def options(kind: str) -> list[dict[str, str]]:
    """The enumeration as the option list the apps show: ``[{code, name}]`` in order."""
    return [{"code": code, "name": label} for code, label in LABELS[kind].items()]
