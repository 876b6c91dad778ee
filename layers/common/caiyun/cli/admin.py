"""``caiyun admin add-staff``: make someone staff in a sandbox data directory."""

from __future__ import annotations

import argparse

from caiyun.cli.common import DEFAULT_DATA_DIR, CliError, community_id, staff_name


def _add_staff(args: argparse.Namespace) -> int:
    from caiyun.sandbox.environment import open_sandbox
    from caiyun.stores import accounts, staff

    name = staff_name(args.phone, args.name)
    if args.role != "admin" and not args.community:
        raise CliError("维修员和门岗须指定 --community / --community is required for this role")
    with open_sandbox(args.data_dir) as sandbox:
        db, now = sandbox.services.db, sandbox.services.clock.now()
        scope = None
        if args.community:
            scope = [community_id(db, ref) for ref in args.community]
        account, created = accounts.ensure_account(db, args.phone, now, name)
        staff.upsert(db, account["_id"], name, args.role, scope, now)
    where = "全部小区 / every community" if scope is None else ", ".join(scope)
    fresh = "新账号 / new account" if created else "已有账号 / existing account"
    print(f"已添加工作人员 / staff added: {name} {args.phone} {args.role} → {where}")
    print(f"  account_id: {account['_id']} ({fresh})")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``caiyun admin add-staff``."""
    from caiyun.stores.staff import STAFF_ROLES

    parser = commands.add_parser("admin", help="运营工具 / operator tools")
    actions = parser.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add-staff",
        help="添加物业工作人员 / make someone staff",
        description="无 --community 的管理员覆盖全部小区 / an admin without --community "
        "covers every community, including ones imported later.",
    )
    add.add_argument("--phone", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=STAFF_ROLES)
    add.add_argument(
        "--community",
        nargs="+",
        metavar="ID_OR_NAME",
        help="小区 id 或名称 / community id or exact name",
    )
    add.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    add.set_defaults(run=_add_staff)
